"""Request bodies the sandbox accepts, validated at its HTTP edge."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator


class CreateChargeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: StrictInt = Field(gt=0)
    currency: StrictStr = Field(pattern=r"^[A-Za-z]{3}$")
    payment_method: StrictStr = Field(min_length=1, max_length=200)
    capture: Literal["automatic", "manual"] = "automatic"
    reference: StrictStr = Field(min_length=1, max_length=200)
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=50)

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def fingerprint(self) -> str:
        """Identifies the request's content, to tell a retry from a reused key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class ThreeDSBody(BaseModel):
    """What the customer's browser posts after the challenge; the client secret authorises it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_secret: StrictStr = Field(min_length=1)
    result: Literal["success", "failure"]


class CaptureBody(BaseModel):
    """Capture an authorized charge: all of it, or ``amount`` of it (never more)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: StrictInt | None = Field(default=None, gt=0)
    # When sent, must be the charge's currency: a cheap guard against capturing the wrong thing.
    currency: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return None if value is None else value.upper()

    def fingerprint(self, charge_id: str) -> str:
        """Identifies the capture's content, to tell a retry from a reused key."""
        return hashlib.sha256(f"{charge_id}:{self.model_dump_json()}".encode()).hexdigest()


class CreateRefundBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    charge: StrictStr = Field(min_length=1, max_length=200)
    amount: StrictInt = Field(gt=0)
    currency: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    reason: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=50)

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return None if value is None else value.upper()

    def fingerprint(self) -> str:
        """Identifies the request's content, to tell a retry from a reused key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


# The longest evidence window a test may ask for; real networks give weeks, not years.
MAX_EVIDENCE_SECONDS = 60 * 24 * 3600


class OpenDisputeBody(BaseModel):
    """Test control: the cardholder disputes a succeeded charge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: StrictStr = Field(default="fraudulent", min_length=1, max_length=100)
    # None disputes everything that was captured.
    amount: StrictInt | None = Field(default=None, gt=0)
    evidence_due_in_seconds: StrictInt = Field(default=7 * 24 * 3600, ge=0, le=MAX_EVIDENCE_SECONDS)


class CloseDisputeBody(BaseModel):
    """Test control: the card network decides the dispute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: Literal["won", "lost"]
