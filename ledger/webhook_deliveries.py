"""Deliveries of events to merchants' webhook endpoints, and every HTTP attempt of each.

A delivery is ``pending`` while its workflow tries, ``delivered`` once a receiver took it, and
``failed`` (a dead letter) when its retry window ran out; a re-drive puts it back to ``pending``
and counts the round, which names the re-drive's workflow.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from ledger.conflicts import insert_ignoring_conflict
from ledger.merchants import aware
from ledger.models import WebhookDelivery, WebhookDeliveryAttempt, utcnow

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
MAX_ERROR = 1000


@dataclass(frozen=True, kw_only=True)
class DeliveryView:
    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    merchant_id: str
    status: str
    attempts: int
    redrives: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


def view_of(row: WebhookDelivery) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        endpoint_id=row.endpoint_id,
        merchant_id=row.merchant_id,
        status=row.status,
        attempts=row.attempts,
        redrives=row.redrives,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=aware(row.created_at) or row.created_at,
        updated_at=aware(row.updated_at) or row.updated_at,
        delivered_at=aware(row.delivered_at),
    )


def ensure(
    session: Session,
    *,
    event_id: str,
    event_type: str,
    endpoint_id: str,
    merchant_id: str,
    payload: dict[str, Any],
) -> WebhookDelivery:
    """The delivery of this event to this endpoint, created on first sight (fan-out runs at
    least once)."""
    now = utcnow()
    insert_ignoring_conflict(
        session,
        WebhookDelivery.__table__,  # type: ignore[attr-defined]
        {
            "id": f"whd_{secrets.token_hex(12)}",
            "event_id": event_id,
            "event_type": event_type,
            "endpoint_id": endpoint_id,
            "merchant_id": merchant_id,
            "status": PENDING,
            "payload": payload,
            "attempts": 0,
            "redrives": 0,
            "event_created_at": now,
            "created_at": now,
            "updated_at": now,
        },
        ["event_id", "endpoint_id"],
    )
    row = session.exec(
        select(WebhookDelivery).where(
            WebhookDelivery.event_id == event_id, WebhookDelivery.endpoint_id == endpoint_id
        )
    ).one()
    return row


def get(session: Session, delivery_id: str, *, lock: bool = False) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    delivered: bool,
) -> int:
    """Log one HTTP try and fold it into the delivery; returns the attempt's number."""
    row = get(session, delivery_id, lock=True)
    if row is None:
        raise LookupError(f"no webhook delivery {delivery_id!r}")
    now = utcnow()
    row.attempts += 1
    row.last_status_code = status_code
    row.last_error = error[:MAX_ERROR] if error else None
    row.updated_at = now
    if delivered:
        row.status = DELIVERED
        row.delivered_at = now
    session.add(row)
    session.add(
        WebhookDeliveryAttempt(
            delivery_id=delivery_id,
            attempt=row.attempts,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error[:MAX_ERROR] if error else None,
        )
    )
    session.flush()
    return row.attempts


def mark_failed(session: Session, delivery_id: str, error: str) -> bool:
    """The retry window ran out: a dead letter. False when it was delivered meanwhile."""
    result = session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == PENDING)
        .values(
            status=FAILED,
            # The last attempt's own error says more than "the window ran out"; keep it.
            last_error=func.coalesce(WebhookDelivery.last_error, error[:MAX_ERROR]),
            updated_at=utcnow(),
        )
    )
    return bool(getattr(result, "rowcount", 0))


def claim_redrive(session: Session, delivery_id: str) -> int | None:
    """Put a failed delivery back to pending; its new round, or None when it was not failed."""
    row = get(session, delivery_id, lock=True)
    if row is None or row.status != FAILED:
        return None
    row.status = PENDING
    row.redrives += 1
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row.redrives


def list_for(
    session: Session,
    merchant_id: str,
    *,
    status: str | None,
    limit: int,
    before: str | None = None,
) -> list[DeliveryView]:
    """Newest first; ``before`` is the id of the last delivery of the previous page."""
    query = select(WebhookDelivery).where(WebhookDelivery.merchant_id == merchant_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        anchor = session.get(WebhookDelivery, before)
        if anchor is not None:
            query = query.where(
                (col(WebhookDelivery.created_at) < anchor.created_at)
                | (
                    (col(WebhookDelivery.created_at) == anchor.created_at)
                    & (col(WebhookDelivery.id) < anchor.id)
                )
            )
    query = query.order_by(
        col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc()
    ).limit(limit)
    return [view_of(row) for row in session.exec(query)]


def failed_since(
    session: Session, since: datetime, *, merchant_id: str | None = None
) -> list[DeliveryView]:
    """Dead letters created at or after ``since``, oldest first (the bulk re-drive's order)."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.status == FAILED, col(WebhookDelivery.created_at) >= since
    )
    if merchant_id is not None:
        query = query.where(WebhookDelivery.merchant_id == merchant_id)
    query = query.order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
    return [view_of(row) for row in session.exec(query)]


def attempts_of(session: Session, delivery_id: str) -> list[WebhookDeliveryAttempt]:
    return list(
        session.exec(
            select(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.delivery_id == delivery_id)
            .order_by(col(WebhookDeliveryAttempt.attempt))
        )
    )


def release_redrive(session: Session, delivery_id: str, round: int) -> None:
    """The re-drive's workflow could not be started: the delivery is a dead letter again."""
    session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id) == delivery_id,
            col(WebhookDelivery.status) == PENDING,
            col(WebhookDelivery.redrives) == round,
        )
        .values(status=FAILED, redrives=round - 1, updated_at=utcnow())
    )
