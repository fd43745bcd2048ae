"""Request schemas at the HTTP edge: strict, unknown fields rejected, money as integers."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StrictInt,
    field_validator,
)
from pydantic_core import PydanticCustomError

from paytide import text
from paytide.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR
from workflows.contract import GatewayName


def _printable(value: object) -> object:
    """Refuses a string with a character paytide/text.py forbids; other types pass on to the
    field's own type check."""
    if isinstance(value, str):
        found = text.refused_character(value)
        if found is not None:
            raise PydanticCustomError(
                "invalid_characters", f"{text.RULE}; found {found}: remove or replace it"
            )
    return value


# Every string a request carries ends with PRINTABLE, after its Field: it runs before the Field's
# checks (so a NUL is `invalid_characters`, not `invalid_format`) and the JSON schema keeps the
# Field's pattern (placed before the Field, pydantic drops the pattern from the schema).
# tests/unit/test_request_text.py fails for a request string without it.
PRINTABLE = BeforeValidator(_printable)
Text = Annotated[str, PRINTABLE]
Identifier = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"), PRINTABLE
]
# Stripe allows 50 metadata keys per object and paytide adds its own ids: merchants get 40.
MAX_METADATA_KEYS = 40
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
# A deliverable address, without the RFC's exotic forms (quoted parts, comments, IP literals):
# visible ASCII before the @, a dotted DNS name after it. Nothing here can break an email header.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
# 13-19 digits, possibly grouped by spaces or dashes: the shape of a card number.
_PAN = re.compile(r"^(?:\d[ -]?){12,18}\d$")


def _printable_keys(value: object) -> object:
    """Metadata keys are checked before the dict is, so the error names the key by its place:
    an error located at the key itself would echo the refused characters back."""
    if isinstance(value, dict):
        for number, key in enumerate(value, start=1):
            found = text.refused_character(key) if isinstance(key, str) else None
            if found is not None:
                raise PydanticCustomError(
                    "invalid_characters",
                    f"metadata key number {number}: {text.RULE}; found {found}: remove or "
                    "replace it",
                )
    return value


def bounded_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise PydanticCustomError(
            "too_many_keys", f"metadata holds at most {MAX_METADATA_KEYS} keys"
        )
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise PydanticCustomError(
                "invalid_key", f"metadata keys are 1 to {MAX_METADATA_KEY} characters"
            )
        if len(item) > MAX_METADATA_VALUE:
            raise PydanticCustomError(
                "value_too_long", f"metadata values are at most {MAX_METADATA_VALUE} characters"
            )
    return value


Metadata = Annotated[
    dict[Text, Text], BeforeValidator(_printable_keys), AfterValidator(bounded_metadata)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(Strict):
    country: Annotated[
        str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"), PRINTABLE
    ]
    city: Annotated[str, Field(min_length=1, max_length=100), PRINTABLE] | None = None


class CreatePayment(Strict):
    amount: Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR, description="minor units")]
    currency: Annotated[
        str,
        Field(
            description="ISO 4217 code, upper case",
            json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)},
        ),
        PRINTABLE,
    ]
    customer_id: Identifier
    payment_method: Identifier
    order_id: Identifier
    description: Annotated[str, Field(max_length=1000), PRINTABLE] | None = None
    metadata: Metadata = Field(default_factory=dict)
    capture: Literal["automatic", "manual"] = "automatic"
    gateway: GatewayName | None = None
    ip_address: IPvAnyAddress | None = None
    device_id: Annotated[str, Field(min_length=1, max_length=255), PRINTABLE] | None = None
    location: Location | None = None
    customer_email: (
        Annotated[
            str,
            Field(
                max_length=254,
                pattern=EMAIL_PATTERN,
                description="where the receipt goes; personal data, never shown back",
            ),
            PRINTABLE,
        ]
        | None
    ) = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_EXPONENTS:
            raise PydanticCustomError(
                "unsupported_currency",
                "currency must be an upper-case ISO 4217 code paytide supports, such as USD, "
                "EUR or JPY",
            )
        return value

    @field_validator("payment_method", mode="before")
    @classmethod
    def _no_card_numbers(cls, value: object) -> object:
        if isinstance(value, str) and _PAN.match(value.strip()):
            # Card data must never enter paytide; tokenise on the client with the gateway.
            raise PydanticCustomError(
                "card_number_not_allowed",
                "payment_method must be a gateway token (for example pm_...), never a card number",
            )
        return value


class CancelBody(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=200), PRINTABLE] = "requested_by_merchant"


class CaptureBody(Strict):
    amount: Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR)] | None = None


class ReviewBody(Strict):
    decision: Literal["approve", "reject"]
    reviewer: Annotated[str, Field(min_length=1, max_length=100), PRINTABLE]
    reason: Annotated[str, Field(min_length=1, max_length=500), PRINTABLE]


class CreateRefund(Strict):
    # None refunds whatever is still refundable.
    amount: Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=200), PRINTABLE] | None = None
    metadata: Metadata = Field(default_factory=dict)


# workflows/events.py ENDPOINT_EVENTS, spelled out for the schema (tests/unit/test_events.py).
EventType = Literal[
    "payment.in_review",
    "payment.requires_action",
    "payment.authorized",
    "payment.needs_attention",
    "payment.succeeded",
    "payment.failed",
    "payment.blocked",
    "payment.canceled",
    "payment.conflicted",
    "refund.succeeded",
    "refund.failed",
    "dispute.created",
    "dispute.updated",
    "dispute.evidence_reminder",
    "dispute.won",
    "dispute.lost",
]
EndpointUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://[^\s/?#@\x00-\x1f\x7f]+(?:[/?#][\x21-\x7e]*)?$",
        description="http(s) URL that receives the signed events",
    ),
    PRINTABLE,
]
EventList = Annotated[list[EventType], Field(min_length=1, max_length=len(EventType.__args__))]
Description = Annotated[str, Field(min_length=1, max_length=200), PRINTABLE]


def _checked_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise PydanticCustomError("invalid_url", "url must be an http or https URL with a host")
    try:
        parts.port  # noqa: B018 - raises on an out-of-range or non-numeric port
    except ValueError:
        raise PydanticCustomError("invalid_url", "url has an invalid port") from None
    return value


class CreateWebhookEndpoint(Strict):
    url: EndpointUrl
    events: EventList
    description: Description | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _checked_url(value)


class UpdateWebhookEndpoint(Strict):
    url: EndpointUrl | None = None
    events: EventList | None = None
    description: Description | None = None
    status: Literal["enabled", "disabled"] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _checked_url(value)
