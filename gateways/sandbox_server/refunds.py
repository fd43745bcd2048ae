"""Refunds as the sandbox processor keeps them, and the in-memory store that holds them.

A refund belongs to one succeeded charge; the refunds of a charge that have not failed may not
add up to more than was captured. Like charges, refunds live in process memory only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateways.sandbox_server.charges import ChargeFailure, KeyIndex


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(kw_only=True)
class Refund:
    id: str
    status: RefundStatus
    charge: str
    amount: int
    currency: str
    reason: str | None
    metadata: dict[str, str]
    created: int
    failure: ChargeFailure | None = None

    def to_json(self) -> dict[str, Any]:
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
            "object": "refund",
            "charge": self.charge,
            "amount": self.amount,
            "currency": self.currency,
            "status": str(self.status),
            "reason": self.reason,
            "metadata": dict(self.metadata),
            "failure": failure,
            "created": self.created,
        }


@dataclass
class RefundStore:
    refunds: dict[str, Refund] = field(default_factory=dict)
    refunds_by_charge: Counter[str] = field(default_factory=Counter)
    keys: KeyIndex = field(default_factory=KeyIndex)

    def key_lock(self, idempotency_key: str) -> asyncio.Lock:
        return self.keys.lock(idempotency_key)

    def for_key(self, idempotency_key: str) -> tuple[Refund, str] | None:
        keyed = self.keys.get(idempotency_key)
        if keyed is None:
            return None
        return self.refunds[keyed.object_id], keyed.fingerprint

    def add(self, refund: Refund, idempotency_key: str, fingerprint: str) -> None:
        self.refunds[refund.id] = refund
        self.keys.put(idempotency_key, refund.id, fingerprint)
        self.refunds_by_charge[refund.charge] += 1

    def get(self, refund_id: str) -> Refund | None:
        return self.refunds.get(refund_id)

    def committed(self, charge_id: str) -> int:
        """The amount of a charge's refunds that have not failed: pending ones count too."""
        return sum(
            refund.amount
            for refund in self.refunds.values()
            if refund.charge == charge_id and refund.status is not RefundStatus.FAILED
        )

    def stats(self) -> dict[str, dict[str, int]]:
        return {"refunds_by_charge": dict(self.refunds_by_charge)}
