"""DeliveryWorkflow: one event to one merchant endpoint, retried with backoff for a window,
then a dead letter that alerts the operators. ReceiptWorkflow: one email receipt.

Both are started detached (never as children) by the activity that fans an event out, so the
payment, refund or dispute that caused the event closes without waiting for any receiver.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.retries import LEDGER_RETRY
from workflows.retries import NOTIFY_RETRY as ALERT_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotificationActivities
    from activities.receipts import ReceiptActivities
    from activities.webhook_delivery import WebhookDeliveryActivities
    from workflows.delivery_contract import (
        DeadLetter,
        DeliveryAttempt,
        DeliveryInput,
        DeliveryResult,
        ReceiptInput,
        ReceiptResult,
    )

# A receipt is a courtesy: after these tries its failure is logged and nothing waits on it.
RECEIPT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=10,
    non_retryable_error_types=["receipt_refused"],
)


@workflow.defn(name="DeliveryWorkflow")
class DeliveryWorkflow:
    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryResult:
        s = input.settings
        try:
            await workflow.execute_activity_method(
                WebhookDeliveryActivities.deliver_webhook,
                DeliveryAttempt(delivery_id=input.delivery_id),
                start_to_close_timeout=timedelta(seconds=s.attempt_timeout_seconds),
                # The whole window, every retry included: past it the delivery is a dead letter.
                schedule_to_close_timeout=timedelta(seconds=s.window_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=s.initial_interval_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=s.max_interval_seconds),
                    non_retryable_error_types=["delivery_gone", "endpoint_disabled"],
                ),
                summary=f"deliver {input.event_type} to {input.endpoint_id}",
            )
        except ActivityError as error:
            return await self._dead_letter(input, str(error.cause or error))
        return DeliveryResult(delivery_id=input.delivery_id, status="delivered")

    async def _dead_letter(self, input: DeliveryInput, reason: str) -> DeliveryResult:
        letter = DeadLetter(
            delivery_id=input.delivery_id,
            event_id=input.event_id,
            event_type=input.event_type,
            endpoint_id=input.endpoint_id,
            merchant_id=input.merchant_id,
            error=reason,
        )
        failed = await workflow.execute_activity_method(
            WebhookDeliveryActivities.dead_letter,
            letter,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            summary="ledger: dead letter",
        )
        if not failed:
            return DeliveryResult(delivery_id=input.delivery_id, status="delivered")
        try:
            await workflow.execute_activity_method(
                NotificationActivities.alert_operators_dead_letter,
                letter,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ALERT_RETRY,
                summary="alert operators: webhook dead letter",
            )
        except ActivityError:
            # GET /webhook-deliveries?status=failed still lists it.
            workflow.logger.warning(
                "dead-letter alert failed", extra={"delivery_id": input.delivery_id}
            )
        return DeliveryResult(delivery_id=input.delivery_id, status="failed")


@workflow.defn(name="ReceiptWorkflow")
class ReceiptWorkflow:
    @workflow.run
    async def run(self, input: ReceiptInput) -> ReceiptResult:
        try:
            return await workflow.execute_activity_method(
                ReceiptActivities.send_receipt,
                input,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RECEIPT_RETRY,
                summary=f"email receipt: {input.event_type}",
            )
        except ActivityError as error:
            workflow.logger.warning(
                "receipt not sent: %s", error.cause or error, extra={"event_id": input.event_id}
            )
            return ReceiptResult(sent=False, skipped_reason="smtp_failed")
