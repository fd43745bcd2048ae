"""Ledger reads and writes for disputes: one row per gateway dispute, and the payment's status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from ledger import payments
from ledger.conflicts import insert_ignoring_conflict
from ledger.models import DisputeRecord, Payment, utcnow
from workflows.contract import (
    CAPTURED_STATUSES,
    FINAL_DISPUTE_STATES,
    DisputeNotice,
    DisputeState,
    GatewayEvent,
    GatewayName,
    PaymentStatus,
)
from workflows.dispute_contract import DisputeChange, DisputeRecorded, DisputeView


def _moment(at: str) -> datetime:
    return datetime.fromisoformat(at) if at else utcnow()


def _due(notice: DisputeNotice) -> datetime | None:
    return datetime.fromisoformat(notice.evidence_due_by) if notice.evidence_due_by else None


def find_payment(session: Session, event: GatewayEvent) -> Payment | None:
    """The disputed payment: only one charged through the dispute's own gateway; a dispute naming
    another gateway's payment stays unattached."""
    provider = event.provider.value
    payment = payments.find_for_event(session, provider, event.payment_id, event.gateway_reference)
    if payment is None or not payments.charged_through(payment, provider):
        return None
    return payment


def get(session: Session, provider: str, reference: str) -> DisputeRecord | None:
    return session.exec(
        select(DisputeRecord).where(
            DisputeRecord.provider == provider, DisputeRecord.dispute_reference == reference
        )
    ).first()


def apply_change(session: Session, change: DisputeChange) -> DisputeRecorded:
    """Create the dispute or move it to the event's state; applying one change twice is a no-op."""
    notice = change.event.dispute
    if notice is None:
        raise ValueError(f"event {change.event.event_id} is not about a dispute")
    now = _moment(change.at)
    provider = change.event.provider.value
    row = get(session, provider, notice.dispute_reference)
    if row is None:
        payment = find_payment(session, change.event)
        if payment is not None:
            payment = payments.lock_payment(session, payment.id)
        insert_ignoring_conflict(
            session,
            DisputeRecord.__table__,  # type: ignore[attr-defined]
            {
                "id": change.dispute_id,
                "provider": provider,
                "dispute_reference": notice.dispute_reference,
                "workflow_id": change.workflow_id,
                "payment_id": payment.id if payment else None,
                "merchant_id": payment.merchant_id if payment else None,
                "status": notice.state.value,
                "reason": (notice.reason or "")[:200] or None,
                "amount_minor": notice.amount_minor,
                "currency": notice.currency,
                "evidence_due_by": _due(notice),
                "payment_status_before": payment.status if payment else None,
                "created_at": now,
                "updated_at": now,
            },
            ["provider", "dispute_reference"],
        )
        row = get(session, provider, notice.dispute_reference)
        assert row is not None
        if payment is not None:
            _payment_follows(session, payment, row, notice.state, now)
        created = _created_by(row, now)
        return DisputeRecorded(dispute=to_view(row), created=created, changed=created)
    if _created_by(row, now):
        # A retried activity whose first try committed: the creation was this change's.
        return DisputeRecorded(dispute=to_view(row), created=True, changed=True)
    if DisputeState(row.status) is notice.state:
        return DisputeRecorded(dispute=to_view(row))  # a re-delivery
    if DisputeState(row.status) in FINAL_DISPUTE_STATES and notice.state not in (
        FINAL_DISPUTE_STATES
    ):
        # A late "updated" event never reopens a decided dispute.
        return DisputeRecorded(dispute=to_view(row))
    values: dict[str, Any] = {"status": notice.state.value, "updated_at": now}
    if notice.reason:
        values["reason"] = notice.reason[:200]
    if notice.amount_minor is not None:
        values["amount_minor"] = notice.amount_minor
    if notice.evidence_due_by:
        values["evidence_due_by"] = _due(notice)
    session.execute(
        update(DisputeRecord)
        .where(col(DisputeRecord.id) == row.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if row.payment_id is not None:
        locked = payments.lock_payment(session, row.payment_id)
        if locked is not None:
            _payment_follows(session, locked, row, notice.state, now)
    return DisputeRecorded(dispute=to_view(row), changed=True)


def _created_by(row: DisputeRecord, at: datetime) -> bool:
    """Whether this change created the row: its time is the workflow's, the same on every retry
    of the activity, and no other change of the dispute carries it."""
    return payments.iso(row.created_at) == payments.iso(at)


def _payment_follows(
    session: Session, payment: Payment, row: DisputeRecord, state: DisputeState, at: datetime
) -> None:
    """The payment's status as the dispute leaves it: disputed while open, then the outcome.

    Only a payment paytide holds as captured follows its dispute. Any other (``conflicted``,
    ``needs_attention``: the gateway's word and ours already disagree) keeps its status for the
    operator who must settle it; the dispute has its own row, and its workflow alerts them."""
    if PaymentStatus(payment.status) not in CAPTURED_STATUSES:
        return
    if state is DisputeState.LOST:
        status = PaymentStatus.DISPUTE_LOST
    elif state is DisputeState.WON:
        status = PaymentStatus(row.payment_status_before or PaymentStatus.SUCCEEDED.value)
    else:
        status = PaymentStatus.DISPUTED
    if PaymentStatus(payment.status) is status:
        return
    payments.record_status_after_success(
        session,
        payment,
        status,
        reason=f"dispute {row.dispute_reference} is {state.value}",
        detail={"dispute_id": row.id, "dispute_status": state.value},
        at=at,
    )


def to_view(row: DisputeRecord) -> DisputeView:
    return DisputeView(
        dispute_id=row.id,
        provider=GatewayName(row.provider),
        dispute_reference=row.dispute_reference,
        status=DisputeState(row.status),
        payment_id=row.payment_id,
        merchant_id=row.merchant_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        reason=row.reason,
        evidence_due_by=payments.iso(row.evidence_due_by) if row.evidence_due_by else None,
        created_at=payments.iso(row.created_at),
        updated_at=payments.iso(row.updated_at),
    )


def list_for_payment(session: Session, payment_id: str) -> list[DisputeRecord]:
    return list(
        session.exec(
            select(DisputeRecord)
            .where(DisputeRecord.payment_id == payment_id)
            .order_by(col(DisputeRecord.created_at), col(DisputeRecord.id))
        )
    )
