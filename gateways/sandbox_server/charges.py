"""Charges as the sandbox processor keeps them, and the in-memory store that holds them.

Everything lives in process memory and is lost on restart; that is the point of a sandbox. The
store is only touched from the event loop, so plain dicts are safe; the per-key lock exists
because handlers await (a slow charge) between checking a key and recording its charge.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ChargeStatus(StrEnum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"
    CANCELED = "canceled"


# Money has not moved yet in these states, so the charge may still be canceled.
CANCELABLE = frozenset(
    {ChargeStatus.PENDING, ChargeStatus.REQUIRES_ACTION, ChargeStatus.AUTHORIZED}
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True, kw_only=True)
class ChargeFailure:
    code: str
    message: str
    retryable: bool = False


@dataclass(kw_only=True)
class Charge:
    id: str
    status: ChargeStatus
    amount: int
    currency: str
    capture: str
    payment_method: str
    reference: str
    metadata: dict[str, str]
    created: int
    # What has been taken from the card: the whole amount on success, or a manual capture's.
    amount_captured: int = 0
    client_secret: str | None = None
    redirect_url: str | None = None
    failure: ChargeFailure | None = None

    def to_json(self) -> dict[str, Any]:
        next_action = (
            {"type": "redirect_to_url", "redirect_url": self.redirect_url}
            if self.status is ChargeStatus.REQUIRES_ACTION and self.redirect_url
            else None
        )
        failure = (
            None
            if self.failure is None
            else {
                "code": self.failure.code,
                "message": self.failure.message,
                "retryable": self.failure.retryable,
            }
        )
        return {
            "id": self.id,
            "status": str(self.status),
            "amount": self.amount,
            "currency": self.currency,
            "capture": self.capture,
            "amount_captured": self.amount_captured,
            "payment_method": self.payment_method,
            "reference": self.reference,
            "metadata": dict(self.metadata),
            "client_secret": self.client_secret,
            "next_action": next_action,
            "failure": failure,
            "created": self.created,
        }


@dataclass(frozen=True)
class Keyed:
    """What an idempotency key produced: the object's id and the request it was made from."""

    object_id: str
    # Hash of the request body that created the charge, to detect a key reused for another body.
    fingerprint: str


@dataclass
class KeyIndex:
    """Idempotency keys of one kind of object: what each key made, and a lock per key."""

    _by_key: dict[str, Keyed] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, idempotency_key: str) -> asyncio.Lock:
        """Serialises requests sharing a key, so a concurrent retry replays instead of redoing."""
        return self._locks.setdefault(idempotency_key, asyncio.Lock())

    def get(self, idempotency_key: str) -> Keyed | None:
        return self._by_key.get(idempotency_key)

    def put(self, idempotency_key: str, object_id: str, fingerprint: str) -> None:
        self._by_key[idempotency_key] = Keyed(object_id, fingerprint)

    def used(self) -> list[str]:
        """Every key that made an object."""
        return list(self._by_key)


@dataclass
class ChargeStore:
    charges: dict[str, Charge] = field(default_factory=dict)
    requests_by_key: Counter[str] = field(default_factory=Counter)
    charges_by_reference: Counter[str] = field(default_factory=Counter)
    keys: KeyIndex = field(default_factory=KeyIndex)
    capture_keys: KeyIndex = field(default_factory=KeyIndex)

    def count_request(self, idempotency_key: str) -> int:
        """Record one more request under the key; return how many there have been."""
        self.requests_by_key[idempotency_key] += 1
        return self.requests_by_key[idempotency_key]

    def key_lock(self, idempotency_key: str) -> asyncio.Lock:
        return self.keys.lock(idempotency_key)

    def for_key(self, idempotency_key: str) -> tuple[Charge, str] | None:
        keyed = self.keys.get(idempotency_key)
        if keyed is None:
            return None
        return self.charges[keyed.object_id], keyed.fingerprint

    def add(self, charge: Charge, idempotency_key: str, fingerprint: str) -> None:
        self.charges[charge.id] = charge
        self.keys.put(idempotency_key, charge.id, fingerprint)
        self.charges_by_reference[charge.reference] += 1

    def capture_for_key(self, idempotency_key: str) -> Keyed | None:
        return self.capture_keys.get(idempotency_key)

    def add_capture(self, charge_id: str, idempotency_key: str, fingerprint: str) -> None:
        self.capture_keys.put(idempotency_key, charge_id, fingerprint)

    def get(self, charge_id: str) -> Charge | None:
        return self.charges.get(charge_id)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            "charges_by_reference": dict(self.charges_by_reference),
            # A key makes at most one charge, so this says which keys made one.
            "charges_by_key": dict.fromkeys(self.keys.used(), 1),
            "requests_by_key": dict(self.requests_by_key),
        }
