"""Ledger reads and writes for refunds: the reservation that serializes them, and settlement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from ledger import payments
from ledger.conflicts import insert_ignoring_conflict
from ledger.models import Payment, RefundRecord, utcnow
from workflows.contract import Failure, GatewayName, PaymentStatus, RefundState
from workflows.refund_contract import (
    RefundSettlement,
    RefundView,
    Reservation,
    ReservationResult,
)

# A payment can be refunded once its money was captured, until all of it is refunded.
REFUNDABLE_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED})
# Refunds that hold part of the refundable amount: pending ones may still succeed.
COUNTED_STATES = (RefundState.PENDING.value, RefundState.SUCCEEDED.value)


def _moment(at: str) -> datetime:
    return datetime.fromisoformat(at) if at else utcnow()


def _refused(code: str, message: str, refundable: int = 0) -> ReservationResult:
    return ReservationResult(
        refusal=Failure(code=code, message=message), refundable_minor=max(0, refundable)
    )


def refunded_sum(session: Session, payment_id: str, states: tuple[str, ...]) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(RefundRecord.amount_minor), 0)).where(
            RefundRecord.payment_id == payment_id, col(RefundRecord.status).in_(states)
        )
    ).one()
    return int(total)


def reserve(session: Session, reservation: Reservation) -> ReservationResult:
    """Insert the refund as pending if it fits in what is still refundable; idempotent.

    Bounded by what was captured (``amount_captured``), never by the authorized amount: after a
    partial capture the rest was never taken. Runs under the payment's row lock, so two refunds of
    one payment are decided one after the other and together can never exceed it."""
    request = reservation.request
    payment = payments.lock_payment(session, request.payment_id)
    if payment is None or payment.merchant_id != request.merchant_id:
        return _refused("payment_not_found", f"no payment {request.payment_id!r}")
    existing = session.get(RefundRecord, request.refund_id)
    if existing is not None:
        # A retried activity, or the workflow asking again: the reservation already stands.
        return _accepted(payment, existing)
    status = PaymentStatus(payment.status)
    # A fully refunded payment is answered like any over-refund: nothing is left to refund.
    if (
        status not in REFUNDABLE_STATUSES | {PaymentStatus.REFUNDED}
        or not payment.gateway
        or not payment.gateway_reference
    ):
        return _refused(
            "payment_not_refundable",
            f"payment is {status.value}; only a succeeded (captured) payment can be refunded",
        )
    captured = payment.amount_captured
    if captured is None:
        # Captured before the ledger recorded how much (ledger/migrations 0007): a manual capture
        # may have taken less than the amount, and refunding more than was taken is not ours.
        return _refused(
            "payment_not_refundable",
            f"payment {payment.id} has no recorded captured amount; check its capture at "
            f"{payment.gateway} and refund it there",
        )
    refundable = captured - refunded_sum(session, payment.id, COUNTED_STATES)
    amount = refundable if request.amount_minor is None else request.amount_minor
    if refundable <= 0 or not 0 < amount <= refundable:
        return _refused(
            "refund_exceeds_refundable",
            f"refunding {amount} would exceed what is refundable: {refundable} of the "
            f"{captured} {payment.currency} captured (succeeded and pending refunds count)",
            refundable,
        )
    now = _moment(reservation.at)
    insert_ignoring_conflict(
        session,
        RefundRecord.__table__,  # type: ignore[attr-defined]
        {
            "id": request.refund_id,
            "payment_id": payment.id,
            "merchant_id": request.merchant_id,
            "idempotency_key": request.idempotency_key,
            "fingerprint": request.fingerprint,
            "workflow_id": reservation.workflow_id,
            "status": RefundState.PENDING.value,
            "amount_minor": amount,
            "currency": payment.currency,
            "reason": request.reason,
            "metadata": dict(request.metadata),
            "gateway": payment.gateway,
            "created_at": now,
            "updated_at": now,
        },
        ["id"],
    )
    row = session.get(RefundRecord, request.refund_id)
    assert row is not None  # inserted just now, under the lock
    return _accepted(payment, row, refundable)


def _accepted(payment: Payment, row: RefundRecord, refundable: int = 0) -> ReservationResult:
    return ReservationResult(
        refund=to_view(row),
        gateway=GatewayName(payment.gateway) if payment.gateway else None,
        gateway_reference=payment.gateway_reference,
        refundable_minor=refundable,
    )


def record_reference(session: Session, refund_id: str, reference: str) -> None:
    """The gateway's refund id, as soon as it is known: webhooks are routed by it."""
    session.execute(
        update(RefundRecord)
        .where(col(RefundRecord.id) == refund_id, col(RefundRecord.refund_reference).is_(None))
        .values(refund_reference=reference)
        .execution_options(synchronize_session=False)
    )


def settle(session: Session, settlement: RefundSettlement) -> RefundView:
    """Record a refund's final state and the payment's resulting status; idempotent."""
    row = session.get(RefundRecord, settlement.refund_id)
    if row is None:
        raise LookupError(f"refund {settlement.refund_id} was never reserved")
    payment = payments.lock_payment(session, row.payment_id)
    assert payment is not None  # a refund row references its payment
    session.refresh(row)
    if row.status != RefundState.PENDING.value:
        return to_view(row)  # settled before: a retried activity
    now = _moment(settlement.at)
    values: dict[str, Any] = {"status": settlement.status.value, "updated_at": now}
    if settlement.refund_reference:
        values["refund_reference"] = row.refund_reference or settlement.refund_reference
    if settlement.failure is not None:
        values["failure_code"] = settlement.failure.code[:64]
        values["failure_message"] = settlement.failure.message[:1000]
    session.execute(
        update(RefundRecord)
        .where(col(RefundRecord.id) == row.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if settlement.status is RefundState.SUCCEEDED:
        _update_payment_status(session, payment, row, now)
    return to_view(row)


def _update_payment_status(
    session: Session, payment: Payment, row: RefundRecord, at: datetime
) -> None:
    if PaymentStatus(payment.status) not in REFUNDABLE_STATUSES | {PaymentStatus.REFUNDED}:
        return  # disputed meanwhile: the dispute's outcome decides the status
    refunded = refunded_sum(session, payment.id, (RefundState.SUCCEEDED.value,))
    captured = payment.amount_captured
    status = (
        PaymentStatus.REFUNDED
        if captured is not None and refunded >= captured
        else PaymentStatus.PARTIALLY_REFUNDED
    )
    payments.record_status_after_success(
        session,
        payment,
        status,
        reason=f"refund {row.id} of {row.amount_minor} succeeded; {refunded} refunded in all",
        detail={"refund_id": row.id, "refunded_minor": refunded},
        at=at,
    )


def to_view(row: RefundRecord) -> RefundView:
    failure = (
        Failure(code=row.failure_code, message=row.failure_message or "")
        if row.failure_code
        else None
    )
    return RefundView(
        refund_id=row.id,
        payment_id=row.payment_id,
        status=RefundState(row.status),
        amount_minor=row.amount_minor,
        currency=row.currency,
        reason=row.reason,
        metadata=dict(row.refund_metadata),
        gateway=GatewayName(row.gateway),
        refund_reference=row.refund_reference,
        failure=failure,
        created_at=payments.iso(row.created_at),
        updated_at=payments.iso(row.updated_at),
    )


def get_by_key(session: Session, merchant_id: str, key: str) -> RefundRecord | None:
    return session.exec(
        select(RefundRecord).where(
            RefundRecord.merchant_id == merchant_id, RefundRecord.idempotency_key == key
        )
    ).first()


def list_for_payment(session: Session, payment_id: str) -> list[RefundRecord]:
    return list(
        session.exec(
            select(RefundRecord)
            .where(RefundRecord.payment_id == payment_id)
            .order_by(col(RefundRecord.created_at), col(RefundRecord.id))
        )
    )


def find_for_event(
    session: Session, provider: str, refund_id: str | None, reference: str | None
) -> RefundRecord | None:
    """The refund a webhook names: by our id when the gateway echoed it, else its reference at
    the event's gateway. The echoed id is the sender's to write: the caller moves the refund only
    when ``row.gateway`` is the event's gateway."""
    if refund_id:
        row = session.get(RefundRecord, refund_id)
        if row is not None:
            return row
    if reference:
        return session.exec(
            select(RefundRecord).where(
                RefundRecord.refund_reference == reference, RefundRecord.gateway == provider
            )
        ).first()
    return None
