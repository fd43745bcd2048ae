"""What the live dashboard reads from the ledger: counts only, every one an indexed query.

Payments are counted by the minute they were *created* in, by their status now: that is what
the ``(status, created_at)`` index answers without reading the events table, and a payment's
final state comes seconds after its creation, so the two minutes rarely differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from ledger.models import Notification, Payment

OUTCOMES = ("succeeded", "failed", "blocked", "canceled", "conflicted")
# A payment refunded or disputed after its success still succeeded as a payment.
_LATER_SUCCESS = ("partially_refunded", "refunded", "disputed", "dispute_lost")
# Still moving without a human: such a payment open for long is stuck. `in_review` waits for an
# operator and `authorized` for a capture, by design; they are counted elsewhere or not at all.
IN_FLIGHT = (
    "received",
    "risk_check",
    "charging",
    "requires_action",
    "awaiting_webhook",
    "needs_attention",
)


def outcome_of(status: str) -> str:
    return "succeeded" if status in _LATER_SUCCESS else status


@dataclass
class Snapshot:
    # per_minute[i][outcome]: payments created in minute i of the window (0 = oldest).
    per_minute: list[dict[str, int]]
    # gateway -> outcome -> payments in the window.
    by_gateway: dict[str, dict[str, int]] = field(default_factory=dict)
    open_reviews: int = 0
    stuck: int = 0
    failed_notifications: int = 0


def _bucket_of_minute(since: datetime, minutes: int) -> Any:
    """Which minute of the window a row was created in, as SQL both dialects run."""
    created = col(Payment.created_at)
    return case(
        *[
            (created >= since + timedelta(minutes=minute), minute)
            for minute in range(minutes - 1, 0, -1)
        ],
        else_=0,
    )


def snapshot(
    session: Session,
    *,
    now: datetime,
    minutes: int,
    stuck_after: timedelta,
    notifications_since: datetime,
) -> Snapshot:
    since = now - timedelta(minutes=minutes)
    counted = (*OUTCOMES, *_LATER_SUCCESS)
    in_window = (col(Payment.status).in_(counted), col(Payment.created_at) >= since)
    per_minute: list[dict[str, int]] = [dict.fromkeys(OUTCOMES, 0) for _ in range(minutes)]
    bucket = _bucket_of_minute(since, minutes).label("bucket")
    rows: Iterable[Any] = session.exec(
        select(bucket, Payment.status, func.count())
        .where(*in_window)
        .group_by(bucket, Payment.status)
    )
    for minute, status, count in rows:
        per_minute[int(minute)][outcome_of(status)] += int(count)

    by_gateway: dict[str, dict[str, int]] = {}
    rows = session.exec(
        select(Payment.gateway, Payment.status, func.count())
        .where(*in_window)
        .group_by(Payment.gateway, Payment.status)
    )
    for gateway, status, count in rows:
        # Blocked payments never reached a gateway.
        tally = by_gateway.setdefault(gateway or "none", dict.fromkeys(OUTCOMES, 0))
        tally[outcome_of(status)] += int(count)

    open_reviews = session.exec(
        select(func.count()).select_from(Payment).where(Payment.status == "in_review")
    ).one()
    stuck = session.exec(
        select(func.count())
        .select_from(Payment)
        .where(
            col(Payment.status).in_(IN_FLIGHT),
            col(Payment.created_at) < now - stuck_after,
        )
    ).one()
    failed_notifications = session.exec(
        select(func.count())
        .select_from(Notification)
        .where(
            Notification.status == "failed",
            col(Notification.updated_at) >= notifications_since,
        )
    ).one()
    return Snapshot(
        per_minute=per_minute,
        by_gateway=by_gateway,
        open_reviews=int(open_reviews),
        stuck=int(stuck),
        failed_notifications=int(failed_notifications),
    )
