"""Disputes as the sandbox processor keeps them: one per disputed charge, opened and decided
through test-control endpoints, announced by signed webhooks like everything else."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DisputeStatus(StrEnum):
    NEEDS_RESPONSE = "needs_response"
    WON = "won"
    LOST = "lost"


@dataclass(kw_only=True)
class Dispute:
    id: str
    status: DisputeStatus
    charge: str
    amount: int
    currency: str
    reason: str
    # Unix seconds: when the merchant's evidence is due.
    evidence_due_by: int
    metadata: dict[str, str]
    created: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "dispute",
            "charge": self.charge,
            "amount": self.amount,
            "currency": self.currency,
            "reason": self.reason,
            "status": str(self.status),
            "evidence_due_by": self.evidence_due_by,
            "metadata": dict(self.metadata),
            "created": self.created,
        }


@dataclass
class DisputeStore:
    disputes: dict[str, Dispute] = field(default_factory=dict)
    by_charge: dict[str, str] = field(default_factory=dict)

    def add(self, dispute: Dispute) -> None:
        self.disputes[dispute.id] = dispute
        self.by_charge[dispute.charge] = dispute.id

    def get(self, dispute_id: str) -> Dispute | None:
        return self.disputes.get(dispute_id)

    def for_charge(self, charge_id: str) -> Dispute | None:
        dispute_id = self.by_charge.get(charge_id)
        return self.disputes.get(dispute_id) if dispute_id else None
