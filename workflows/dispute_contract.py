"""The contract of a dispute: the frozen dataclasses DisputeWorkflow and its activities exchange.

Same rules as ``workflows.contract``: add fields only with defaults, never rename or retype one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.contract import DisputeState, GatewayEvent, GatewayName


@dataclass(frozen=True, kw_only=True)
class DisputeSettings:
    """Timing knobs captured at start, so a settings change never rewrites a running history."""

    # The merchant is reminded this long before the evidence is due.
    reminder_before_seconds: float = 2 * 24 * 3600.0
    # How long an open dispute waits for its outcome before operators are alerted again.
    max_open_seconds: float = 120 * 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class DisputeInput:
    dispute_id: str
    provider: GatewayName
    dispute_reference: str
    settings: DisputeSettings = field(default_factory=DisputeSettings)


@dataclass(frozen=True, kw_only=True)
class DisputeView:
    """The dispute as the ledger, the merchant and operators see it."""

    dispute_id: str
    provider: GatewayName
    dispute_reference: str
    status: DisputeState
    payment_id: str | None = None
    merchant_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    reason: str | None = None
    evidence_due_by: str | None = None
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True, kw_only=True)
class DisputeChange:
    """One dispute event, written to the ledger: creates the dispute or moves it on."""

    dispute_id: str
    workflow_id: str
    event: GatewayEvent
    at: str = ""


@dataclass(frozen=True, kw_only=True)
class DisputeRecorded:
    """The dispute after one change, and whether the change moved it (a re-delivery does not)."""

    dispute: DisputeView
    # The ledger had no row for this dispute before this change.
    created: bool = False
    # The dispute's status changed (or it was created) with this event.
    changed: bool = False


@dataclass(frozen=True, kw_only=True)
class DisputeNotification:
    dispute: DisputeView
    event_type: str
