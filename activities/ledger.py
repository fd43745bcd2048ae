"""Ledger writes run by the payment workflow (as local activities: short, idempotent)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session
from temporalio import activity

from activities.ledger_errors import ledger_transaction
from ledger import payments
from ledger.engine import SessionFactory
from ledger.models import Payment
from paytide.metrics import NONE, WorkerMetrics
from workflows.contract import TERMINAL_STATUSES, NotificationFailure, PaymentStatus, Transition

# A payment's own final states; refunds and disputes come later, in workflows of their own.
FINAL_STATUSES = TERMINAL_STATUSES | {PaymentStatus.CONFLICTED}


class LedgerActivities:
    def __init__(self, sessions: SessionFactory, metrics: WorkerMetrics | None = None) -> None:
        self._sessions = sessions
        self._metrics = metrics or WorkerMetrics()

    @activity.defn(name="record_transition")
    def record_transition(self, transition: Transition) -> None:
        with ledger_transaction(self._sessions) as session:
            moved = payments.apply_transition(session, transition)
            # Counted only when this call moved the row, so a retried local activity (or a
            # replayed one after a worker crash) does not count a payment twice.
            if moved:
                self._count(session, transition)

    @activity.defn(name="record_notification_failure")
    def record_notification_failure(self, failure: NotificationFailure) -> None:
        with ledger_transaction(self._sessions) as session:
            payments.record_notification_failure(session, failure)
        self._metrics.notification_dead_letters.labels(event_type=failure.event_type).inc()

    def _count(self, session: Session, transition: Transition) -> None:
        metrics = self._metrics
        if transition.status is PaymentStatus.IN_REVIEW:
            metrics.fraud_reviews.inc()
            return
        if transition.status not in FINAL_STATUSES:
            return
        code = transition.failure.code if transition.failure else NONE
        if transition.status is PaymentStatus.BLOCKED:
            metrics.fraud_blocks.labels(reason=code).inc()
        row = session.get(Payment, transition.payment_id)
        if row is None:
            return
        gateway = transition.gateway.value if transition.gateway else row.gateway or NONE
        metrics.payments_final.labels(
            status=transition.status.value,
            gateway=gateway,
            currency=row.currency,
            failure_code=code,
        ).inc()
        ended = datetime.fromisoformat(transition.at) if transition.at else datetime.now(UTC)
        started = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        metrics.time_to_final.labels(status=transition.status.value).observe(
            max(0.0, (ended - started).total_seconds())
        )
