"""Telling the merchant: a signed event POSTed to the merchant's callback URL, and the same event
fanned out to the merchant's webhook endpoints (activities/fan_out.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fan_out import Event, EventFanOut
from gateways.signing import sign
from ledger import payments
from ledger.engine import SessionFactory, transaction
from ledger.models import Payment
from paytide.metrics import WorkerMetrics
from workflows.contract import NotificationInput, NotificationResult, OperatorAlert, PaymentView
from workflows.delivery_contract import DeadLetter, ReceiptInput
from workflows.dispute_contract import DisputeNotification
from workflows.events import EventType
from workflows.public import public_dispute, public_payment, public_refund
from workflows.refund_contract import RefundNotification

SIGNATURE_HEADER = "Paytide-Signature"


class _Undelivered(Exception):
    """The endpoint did not take the event; the message says how it failed."""


def event_id(payment_id: str, event_type: str) -> str:
    """Stable per payment and event type, so a receiver can drop re-deliveries."""
    digest = hashlib.sha256(f"{payment_id}:{event_type}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def payment_subject(payment: PaymentView, event_type: str) -> str:
    """What a payment event's id is derived from. A payment can need attention more than once
    (no answer to its charge, later none to its capture): each time is its own event, named by
    when it began, so a receiver that drops re-deliveries does not drop the next escalation."""
    if event_type == EventType.PAYMENT_NEEDS_ATTENTION:
        return f"{payment.payment_id}@{payment.updated_at}"
    return payment.payment_id


class NotificationActivities:
    def __init__(
        self,
        client: httpx.AsyncClient,
        sessions: SessionFactory,
        *,
        callback_url: str | None,
        signing_secret: str | None,
        ops_url: str | None = None,
        ops_secret: str | None = None,
        metrics: WorkerMetrics | None = None,
        fan_out: EventFanOut | None = None,
    ) -> None:
        self._metrics = metrics or WorkerMetrics()
        self._client = client
        self._sessions = sessions
        self._url = callback_url
        self._secret = signing_secret
        self._ops_url = ops_url
        self._ops_secret = ops_secret
        self._fan_out = fan_out

    async def _post(self, url: str, secret: str, event: str, kind: str, data: Any) -> int:
        """POST one signed event; the status code of a 2xx answer, else a retryable error."""
        body = json.dumps(
            {"id": event, "type": kind, "created": int(time.time()), "data": data},
            separators=(",", ":"),
        ).encode()
        headers = {
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "Content-Type": "application/json",
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise _Undelivered(f"endpoint unreachable: {type(error).__name__}: {error}") from error
        if not response.is_success:
            raise _Undelivered(f"endpoint answered {response.status_code}")
        return response.status_code

    async def _alert(self, subject_id: str, kind: str, data: Any) -> NotificationResult:
        if not self._ops_url or not self._ops_secret:
            return NotificationResult(delivered=False, skipped_reason="no_ops_alert_url")
        try:
            status = await self._post(
                self._ops_url, self._ops_secret, event_id(subject_id, f"ops.{kind}"), kind, data
            )
        except _Undelivered as error:
            raise ApplicationError(f"ops alert {error}", type="alert_failed") from error
        return NotificationResult(delivered=True, status_code=status)

    async def _emit(self, merchant_id: str | None, subject_id: str, kind: str, data: Any) -> None:
        if self._fan_out is None or merchant_id is None:
            return
        await self._fan_out.emit(
            Event(
                event_id=event_id(subject_id, kind),
                event_type=kind,
                merchant_id=merchant_id,
                data=data,
            )
        )

    def _merchant_of(self, payment_id: str) -> str | None:
        with transaction(self._sessions) as session:
            row = session.get(Payment, payment_id)
            return row.merchant_id if row is not None else None

    @activity.defn(name="alert_operators")
    async def alert_operators(self, alert: OperatorAlert) -> NotificationResult:
        """Tell the operators' channel about a payment that needs a human: in review,
        needs_attention, conflicted, or ended because a step can never succeed."""
        payment_id = alert.payment.payment_id
        if activity.info().attempt == 1:
            # Counted here, once, so a missing or failing alert URL still leaves a trace.
            self._metrics.operator_alerts.labels(kind=alert.kind).inc()
            if alert.unrecoverable_step is not None:
                step = alert.unrecoverable_step
                self._metrics.payments_ended_unrecoverable.labels(step=step).inc()
        if alert.kind == EventType.PAYMENT_IN_REVIEW:
            # The merchant's endpoints hear of the review too; the workflow has no separate
            # merchant notification for it (its history stays as it was).
            merchant = await asyncio.to_thread(self._merchant_of, payment_id)
            await self._emit(merchant, payment_id, alert.kind, public_payment(alert.payment))
        data = public_payment(alert.payment)
        if alert.reason is not None:
            data["reason"] = alert.reason
        return await self._alert(payment_subject(alert.payment, alert.kind), alert.kind, data)

    @activity.defn(name="alert_operators_dispute")
    async def alert_operators_dispute(self, alert: DisputeNotification) -> NotificationResult:
        """Tell the operators' channel that a dispute opened or was decided."""
        return await self._alert(
            alert.dispute.dispute_id, alert.event_type, public_dispute(alert.dispute)
        )

    async def _notify(
        self, payment_id: str, subject_id: str, event_type: str, data: Any, record_as: str
    ) -> NotificationResult:
        """Deliver one merchant event, recording each try against the payment."""
        attempt = activity.info().attempt
        counted = self._metrics.notifications
        if not self._url or not self._secret:
            counted.labels(event_type=event_type, outcome="skipped").inc()
            await self._record(
                payment_id, record_as, "skipped", attempt, "no callback URL configured"
            )
            return NotificationResult(delivered=False, skipped_reason="no_callback_url")
        try:
            status = await self._post(
                self._url, self._secret, event_id(subject_id, event_type), event_type, data
            )
        except _Undelivered as error:
            counted.labels(event_type=event_type, outcome="retrying").inc()
            await self._record(payment_id, record_as, "retrying", attempt, f"merchant {error}")
            raise ApplicationError(f"merchant {error}", type="notification_failed") from error
        counted.labels(event_type=event_type, outcome="delivered").inc()
        await self._record(payment_id, record_as, "delivered", attempt, None)
        return NotificationResult(delivered=True, status_code=status)

    @activity.defn(name="alert_operators_dead_letter")
    async def alert_operators_dead_letter(self, letter: DeadLetter) -> NotificationResult:
        """Tell the operators that a merchant's endpoint never took an event."""
        return await self._alert(
            letter.delivery_id,
            EventType.WEBHOOK_DEAD_LETTER,
            {
                "delivery_id": letter.delivery_id,
                "event_id": letter.event_id,
                "event_type": letter.event_type,
                "endpoint_id": letter.endpoint_id,
                "merchant_id": letter.merchant_id,
                "error": letter.error,
            },
        )

    @activity.defn(name="emit_merchant_event")
    async def emit_merchant_event(self, notification: NotificationInput) -> NotificationResult:
        """Start the deliveries of one payment event to the merchant's endpoints (no callback);
        ``delivered`` means handed to them, not received."""
        payment = notification.payment
        await self._emit(
            notification.merchant_id,
            payment_subject(payment, notification.event_type),
            notification.event_type,
            public_payment(payment),
        )
        return NotificationResult(delivered=True)

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, notification: NotificationInput) -> NotificationResult:
        payment = notification.payment
        payment_id = payment.payment_id
        kind = notification.event_type
        await self._emit(notification.merchant_id, payment_id, kind, public_payment(payment))
        if (
            self._fan_out is not None
            and kind == EventType.PAYMENT_SUCCEEDED
            and payment.customer_email
        ):
            await self._fan_out.remember_email(payment_id, payment.customer_email)
            await self._fan_out.receipt(
                ReceiptInput(
                    event_id=event_id(payment_id, kind),
                    event_type=kind,
                    payment_id=payment_id,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                    order_id=payment.order_id,
                )
            )
        return await self._notify(
            payment_id,
            payment_id,
            notification.event_type,
            public_payment(notification.payment),
            notification.event_type,
        )

    @activity.defn(name="notify_merchant_refund")
    async def notify_merchant_refund(self, notification: RefundNotification) -> NotificationResult:
        refund = notification.refund
        kind = notification.event_type
        await self._emit(notification.merchant_id, refund.refund_id, kind, public_refund(refund))
        if self._fan_out is not None and kind == EventType.REFUND_SUCCEEDED:
            await self._fan_out.receipt(
                ReceiptInput(
                    event_id=event_id(refund.refund_id, kind),
                    event_type=kind,
                    payment_id=refund.payment_id,
                    amount_minor=refund.amount_minor,
                    currency=refund.currency,
                    refund_id=refund.refund_id,
                )
            )
        return await self._notify(
            refund.payment_id,
            refund.refund_id,
            notification.event_type,
            public_refund(refund),
            # A payment may have many refunds: each one's event is its own row.
            f"{notification.event_type}:{refund.refund_id}",
        )

    @activity.defn(name="notify_merchant_dispute")
    async def notify_merchant_dispute(
        self, notification: DisputeNotification
    ) -> NotificationResult:
        dispute = notification.dispute
        kind = notification.event_type
        await self._emit(dispute.merchant_id, dispute.dispute_id, kind, public_dispute(dispute))
        if dispute.payment_id is None:
            # A dispute on a charge this ledger does not know has no merchant to tell.
            return NotificationResult(delivered=False, skipped_reason="unknown_payment")
        return await self._notify(
            dispute.payment_id,
            dispute.dispute_id,
            notification.event_type,
            public_dispute(dispute),
            f"{notification.event_type}:{dispute.dispute_id}",
        )

    async def _record(
        self, payment_id: str, event_type: str, status: str, attempts: int, error: str | None
    ) -> None:
        def write() -> None:
            with transaction(self._sessions) as session:
                payments.record_notification(
                    session,
                    payment_id=payment_id,
                    event_type=event_type,
                    status=status,
                    attempts=attempts,
                    error=error,
                )

        await asyncio.to_thread(write)
