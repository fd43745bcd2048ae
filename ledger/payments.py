"""Ledger reads and writes for payments, shared by the activities and the API."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlmodel import Session, col, select

from ledger.conflicts import insert_ignoring_conflict
from ledger.models import Notification, Payment, PaymentEvent, WebhookEvent, utcnow
from ledger.transition_sql import MOVE_PAYMENT
from workflows.contract import (
    CaptureMethod,
    Failure,
    GatewayName,
    NotificationFailure,
    PaymentRequest,
    PaymentStatus,
    PaymentView,
    RiskFactor,
    Transition,
)

# The text columns' sizes (ledger/models.py). Gateways, proxies and operators write texts of any
# length: PostgreSQL refuses a longer one (the write could never succeed), so it is cut to fit;
# the event's ``detail`` keeps a failure's whole message.
REASON_CHARS = 1000
TEXT_CHARS = 1000
FAILURE_CODE_CHARS = 64


def _fitted(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def _moment(transition: Transition) -> datetime:
    return datetime.fromisoformat(transition.at) if transition.at else utcnow()


def _new_payment_row(transition: Transition, request: PaymentRequest) -> dict[str, Any]:
    now = _moment(transition)
    return {
        "id": request.payment_id,
        "merchant_id": request.merchant_id,
        "idempotency_key": request.idempotency_key,
        "fingerprint": request.fingerprint,
        "workflow_id": transition.workflow_id,
        "status": transition.status.value,
        "amount_minor": request.amount_minor,
        "currency": request.currency,
        "customer_id": request.customer_id,
        "order_id": request.order_id,
        "payment_method": request.payment_method,
        "description": request.description,
        "metadata": dict(request.metadata),
        "capture_method": request.capture.value,
        "ip_address": request.risk.ip_address,
        "device_id": request.risk.device_id,
        "country": request.risk.country,
        "risk_factors": [],
        "last_seq": 0,
        "created_at": now,
        "updated_at": now,
    }


def apply_transition(session: Session, transition: Transition) -> bool:
    """Record one status change, idempotently; an older transition never overwrites a newer one.

    True when this call moved the payment's row: a retried or late transition answers False,
    so whoever counts transitions counts each one once.
    """
    at = _moment(transition)
    if transition.request is not None:
        insert_ignoring_conflict(
            session,
            Payment.__table__,  # type: ignore[attr-defined]
            _new_payment_row(transition, transition.request),
            ["id"],
        )
    insert_ignoring_conflict(
        session,
        PaymentEvent.__table__,  # type: ignore[attr-defined]
        {
            "payment_id": transition.payment_id,
            "seq": transition.seq,
            "status": transition.status.value,
            "reason": _fitted(transition.reason, REASON_CHARS),
            "detail": _detail(transition),
            "created_at": at,
        },
        ["payment_id", "seq"],
    )
    risk, failure = transition.risk, transition.failure
    moved = session.connection().execute(
        MOVE_PAYMENT,
        {
            "new_id": transition.payment_id,
            "new_seq": transition.seq,
            "new_status": transition.status.value,
            "new_updated_at": at,
            "new_gateway": transition.gateway.value if transition.gateway else None,
            "new_gateway_reference": transition.gateway_reference,
            "new_risk_score": risk.score if risk else None,
            "new_risk_factors": [asdict(factor) for factor in risk.factors] if risk else None,
            "new_failure_code": _fitted(failure.code, FAILURE_CODE_CHARS) if failure else None,
            "new_failure_message": _fitted(failure.message, TEXT_CHARS) if failure else None,
            "new_failure_retryable": failure.retryable if failure else None,
            "new_amount_captured": transition.amount_captured,
        },
    )
    return bool(moved.rowcount)


def _detail(transition: Transition) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if transition.gateway is not None:
        detail["gateway"] = transition.gateway.value
    if transition.gateway_reference is not None:
        detail["gateway_reference"] = transition.gateway_reference
    if transition.failure is not None:
        detail["failure"] = asdict(transition.failure)
    if transition.amount_captured is not None:
        detail["amount_captured"] = transition.amount_captured
    return detail


def record_notification(
    session: Session,
    *,
    payment_id: str,
    event_type: str,
    status: str,
    attempts: int,
    error: str | None,
) -> None:
    inserted = insert_ignoring_conflict(
        session,
        Notification.__table__,  # type: ignore[attr-defined]
        {
            "payment_id": payment_id,
            "event_type": event_type,
            "status": status,
            "attempts": attempts,
            "last_error": _fitted(error, TEXT_CHARS),
            "created_at": utcnow(),
            "updated_at": utcnow(),
        },
        ["payment_id", "event_type"],
    )
    if not inserted:
        session.execute(
            update(Notification)
            .where(
                col(Notification.payment_id) == payment_id,
                col(Notification.event_type) == event_type,
            )
            .values(
                status=status,
                attempts=attempts,
                last_error=_fitted(error, TEXT_CHARS),
                updated_at=utcnow(),
            )
        )


def record_notification_failure(session: Session, failure: NotificationFailure) -> None:
    record_notification(
        session,
        payment_id=failure.payment_id,
        event_type=failure.event_type,
        status="failed",
        attempts=failure.attempts,
        error=failure.error[:1000],
    )


def get_payment(session: Session, merchant_id: str, payment_id: str) -> Payment | None:
    return session.exec(
        select(Payment).where(Payment.id == payment_id, Payment.merchant_id == merchant_id)
    ).first()


def get_by_idempotency_key(session: Session, merchant_id: str, key: str) -> Payment | None:
    return session.exec(
        select(Payment).where(Payment.merchant_id == merchant_id, Payment.idempotency_key == key)
    ).first()


def find_by_gateway_reference(session: Session, gateway: str, reference: str) -> Payment | None:
    return session.exec(
        select(Payment).where(Payment.gateway_reference == reference, Payment.gateway == gateway)
    ).first()


def find_for_event(
    session: Session, provider: str, payment_id: str | None, reference: str | None
) -> Payment | None:
    """The payment a verified gateway event names: by our payment id when the event echoes it,
    else by the reference at the event's gateway. The echoed id is metadata that anyone holding
    that gateway's secret can write, so whether the event may move the payment is
    `charged_through`'s question, asked by every caller."""
    if payment_id:
        row = session.get(Payment, payment_id)
        if row is not None:
            return row
    if reference:
        return find_by_gateway_reference(session, provider, reference)
    return None


def charged_through(payment: Payment, provider: str) -> bool:
    """Whether ``provider`` is the gateway that charges ``payment``: the only one whose events
    may move it, since a signed event is evidence about its own account's charges only. The row
    names the current attempt's gateway; a payment fails over to another only once the previous
    one proved the attempt charged nothing, and the workflow never lets an earlier attempt's
    events settle a later one."""
    return payment.gateway == provider


def list_events(session: Session, payment_id: str) -> list[PaymentEvent]:
    return list(
        session.exec(
            select(PaymentEvent)
            .where(PaymentEvent.payment_id == payment_id)
            .order_by(col(PaymentEvent.seq))
        )
    )


def list_payments(
    session: Session,
    *,
    merchant_id: str,
    customer_id: str | None,
    status: str | None,
    created_after: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Payment]:
    """Newest first, keyset-paginated on (created_at, id) so pages never skip or repeat rows."""
    query = select(Payment).where(Payment.merchant_id == merchant_id)
    if customer_id is not None:
        query = query.where(Payment.customer_id == customer_id)
    if status is not None:
        query = query.where(Payment.status == status)
    if created_after is not None:
        query = query.where(col(Payment.created_at) > created_after)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(
                col(Payment.created_at) < created,
                and_(col(Payment.created_at) == created, col(Payment.id) < last_id),
            )
        )
    query = query.order_by(col(Payment.created_at).desc(), col(Payment.id).desc()).limit(limit)
    return list(session.exec(query))


def record_webhook(
    session: Session,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    payment_id: str | None,
    gateway_reference: str | None,
) -> bool:
    """Store a verified webhook; False when this event id was seen before (a re-delivery)."""
    return insert_ignoring_conflict(
        session,
        WebhookEvent.__table__,  # type: ignore[attr-defined]
        {
            "provider": provider,
            "event_id": event_id,
            "event_type": event_type,
            "payment_id": payment_id,
            "gateway_reference": gateway_reference,
            "delivery": "received",
            "received_at": utcnow(),
        },
        ["provider", "event_id"],
    )


def mark_webhook(session: Session, *, provider: str, event_id: str, delivery: str) -> None:
    session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.provider) == provider, col(WebhookEvent.event_id) == event_id)
        .values(delivery=delivery)
    )


def customer_activity(
    session: Session, *, merchant_id: str, customer_id: str, exclude_id: str, since: datetime
) -> int:
    """How many payments this customer started since ``since`` (the one being scored excluded)."""
    count = session.exec(
        select(func.count())
        .select_from(Payment)
        .where(
            Payment.merchant_id == merchant_id,
            Payment.customer_id == customer_id,
            col(Payment.created_at) >= since,
            Payment.id != exclude_id,
        )
    ).one()
    return int(count)


def window_start(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def to_view(row: Payment) -> PaymentView:
    """The ledger's copy of a payment in the contract's shape (for closed or old payments)."""
    failure = (
        Failure(
            code=row.failure_code,
            message=row.failure_message or "",
            retryable=bool(row.failure_retryable),
        )
        if row.failure_code
        else None
    )
    return PaymentView(
        payment_id=row.id,
        workflow_id=row.workflow_id,
        status=PaymentStatus(row.status),
        amount_minor=row.amount_minor,
        currency=row.currency,
        customer_id=row.customer_id,
        order_id=row.order_id,
        capture=CaptureMethod(row.capture_method),
        gateway=GatewayName(row.gateway) if row.gateway else None,
        gateway_reference=row.gateway_reference,
        risk_score=row.risk_score,
        risk_factors=[
            RiskFactor(name=f["name"], weight=f["weight"], evidence=f.get("evidence", {}))
            for f in row.risk_factors
        ],
        failure=failure,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        amount_captured=row.amount_captured,
    )


def iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; every timestamp we write is UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def in_review(session: Session, *, merchant_id: str | None, limit: int) -> list[Payment]:
    """The review queue: payments waiting for an operator, oldest first (every merchant's when
    ``merchant_id`` is None)."""
    statement = select(Payment).where(Payment.status == "in_review")
    if merchant_id is not None:
        statement = statement.where(Payment.merchant_id == merchant_id)
    return list(
        session.exec(statement.order_by(col(Payment.created_at), col(Payment.id)).limit(limit))
    )


def get_any_payment(session: Session, payment_id: str) -> Payment | None:
    """A payment of whichever merchant: for operators only (the API checks the role first)."""
    return session.get(Payment, payment_id)


def lock_payment(session: Session, payment_id: str) -> Payment | None:
    """Take the payment's row for the rest of this transaction, on both databases.

    A no-op UPDATE rather than ``SELECT … FOR UPDATE``: on PostgreSQL it takes the same row lock,
    and on SQLite (where FOR UPDATE does not exist) it takes the database's write lock before
    anything is read, so a concurrent writer waits (busy_timeout) instead of reading a sum that is
    stale by the time it writes. See docs/decisions.md, "Refunds serialize on the payment row".
    """
    session.execute(
        update(Payment)
        .where(col(Payment.id) == payment_id)
        .values(last_seq=col(Payment.last_seq))
        .execution_options(synchronize_session=False)
    )
    return session.exec(select(Payment).where(Payment.id == payment_id)).first()


def record_status_after_success(
    session: Session,
    payment: Payment,
    status: PaymentStatus,
    *,
    reason: str,
    detail: dict[str, Any],
    at: datetime,
) -> None:
    """A status change made after the payment workflow ended (refunds, disputes).

    The caller holds the payment's row lock (`lock_payment`). The event takes the next sequence
    number, so a late write from the payment workflow (a notification re-drive re-recording
    ``succeeded``) can no longer overwrite it."""
    seq = payment.last_seq + 1
    insert_ignoring_conflict(
        session,
        PaymentEvent.__table__,  # type: ignore[attr-defined]
        {
            "payment_id": payment.id,
            "seq": seq,
            "status": status.value,
            "reason": reason[:1000],
            "detail": detail,
            "created_at": at,
        },
        ["payment_id", "seq"],
    )
    session.execute(
        update(Payment)
        .where(col(Payment.id) == payment.id)
        .values(status=status.value, last_seq=seq, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    payment.status, payment.last_seq = status.value, seq
