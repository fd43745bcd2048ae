"""RefundWorkflow: one refund of a succeeded payment, read top to bottom.

reserve in the ledger (refused → the API answers 422, nothing else happens)
  → refund at the payment's gateway (same idempotency key on every retry)
  → wait for the refund webhook, asking the gateway at each deadline
  → ledger: succeeded | failed, and the payment becomes partially_refunded | refunded
  → notify the merchant

The workflow id is ``refund:{merchant}:{idempotency key}``, so a retried request joins the same
refund. Refunds of one payment are serialized by the reservation (a row lock on the payment in
the ledger), not by a workflow per payment: see docs/decisions.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.retries import LEDGER_RETRY, NOTIFY_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.gateway import GatewayActivities
    from activities.notify import NotificationActivities
    from activities.refund_ledger import RefundLedgerActivities
    from workflows.contract import (
        Failure,
        GatewayEvent,
        GatewayName,
        RefundLookup,
        RefundOutcome,
        RefundRequest,
        RefundState,
    )
    from workflows.events import EventType
    from workflows.refund_contract import (
        RefundInitiate,
        RefundInitiateResult,
        RefundInput,
        RefundNotification,
        RefundResult,
        RefundSettlement,
        RefundView,
        Reservation,
        ReservationResult,
    )

# After the longest wait, an unsettled refund is still followed, this often.
LATE_RECONCILE_EVERY = timedelta(hours=1)
FINAL = frozenset({RefundState.SUCCEEDED, RefundState.FAILED})
_EVENT_TYPE = {
    RefundState.SUCCEEDED: EventType.REFUND_SUCCEEDED,
    RefundState.FAILED: EventType.REFUND_FAILED,
}


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.init
    def __init__(self, input: RefundInput) -> None:
        self._request = input.request
        self._settings = input.settings
        self._reservation: ReservationResult | None = None
        self._view: RefundView | None = None
        self._reference: str | None = None
        # Verified refund events in arrival order, deduplicated by event id.
        self._events: list[GatewayEvent] = []
        self._seen: set[str] = set()
        self._late = False

    @workflow.run
    async def run(self, input: RefundInput) -> RefundResult:
        reservation = await self._reserve()
        self._reservation = reservation
        if reservation.refund is None:
            await workflow.wait_condition(workflow.all_handlers_finished)
            return RefundResult(
                refusal=reservation.refusal,
                refundable_minor=reservation.refundable_minor,
                fingerprint=self._request.fingerprint,
            )
        self._view = reservation.refund
        self._reference = reservation.refund.refund_reference

        outcome = await self._refund_at_gateway(reservation)
        if outcome.state not in FINAL:
            outcome = await self._follow_until_final(self._refund_gateway() or GatewayName.SANDBOX)
        self._view = await workflow.execute_local_activity_method(
            RefundLedgerActivities.settle,
            RefundSettlement(
                refund_id=self._request.refund_id,
                status=outcome.state,
                refund_reference=outcome.refund_reference or self._reference,
                failure=outcome.failure,
                at=workflow.now().isoformat(),
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            summary=f"ledger: refund {outcome.state.value}",
        )
        await self._notify_merchant(self._view)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return RefundResult(refund=self._view, fingerprint=self._request.fingerprint)

    # ---- Messages -------------------------------------------------------------------------

    @workflow.update
    async def initiate(self, request: RefundInitiate) -> RefundInitiateResult:
        """Answer the API once the ledger accepted or refused the refund."""
        await workflow.wait_condition(lambda: self._reservation is not None)
        reservation = self._reservation
        assert reservation is not None
        if reservation.refund is None:
            refusal = reservation.refusal or Failure(code="refund_refused", message="refused")
            raise ApplicationError(
                refusal.message,
                reservation.refundable_minor,
                type=refusal.code,
                non_retryable=True,
            )
        return RefundInitiateResult(
            refund=self._view or reservation.refund, started_by=self._request.request_id
        )

    @initiate.validator
    def _validate_initiate(self, request: RefundInitiate) -> None:
        if request.fingerprint != self._request.fingerprint:
            raise ApplicationError(
                "this Idempotency-Key was already used with a different request body",
                type="idempotency_key_reused",
                non_retryable=True,
            )

    @workflow.signal
    def refund_event(self, event: GatewayEvent) -> None:
        # Event ids are unique within one gateway only.
        key = f"{event.provider.value}:{event.event_id}"
        if key in self._seen or event.refund is None:
            return
        gateway = self._refund_gateway()
        if gateway is not None and event.provider is not gateway:
            # A signed event is evidence about its own gateway's refunds only (`_next_event`
            # also drops one that arrived before the reservation named the gateway).
            workflow.logger.warning(
                "ignored %s event %s: the refund is made through %s",
                event.provider.value,
                event.event_id,
                gateway.value,
                extra=self._log_extra(),
            )
            return
        self._seen.add(key)
        self._events.append(event)

    @workflow.query
    def status(self) -> RefundView | None:
        return self._view

    # ---- Steps ----------------------------------------------------------------------------

    async def _reserve(self) -> ReservationResult:
        return await workflow.execute_local_activity_method(
            RefundLedgerActivities.reserve,
            Reservation(
                request=self._request,
                workflow_id=workflow.info().workflow_id,
                at=workflow.now().isoformat(),
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            summary="ledger: reserve refund",
        )

    async def _refund_at_gateway(self, reservation: ReservationResult) -> RefundOutcome:
        """Ask the gateway to refund; transport trouble is retried with the same key until the
        gateway answers, because a timed-out request may have been processed."""
        assert reservation.refund is not None and reservation.gateway is not None
        request = RefundRequest(
            gateway=reservation.gateway,
            payment_id=self._request.payment_id,
            gateway_reference=reservation.gateway_reference or "",
            # One refund, one key: derived from the workflow id, never from an attempt number.
            idempotency_key=f"{workflow.info().workflow_id}/refund",
            amount_minor=reservation.refund.amount_minor,
            currency=reservation.refund.currency,
            reason=self._request.reason,
            refund_id=self._request.refund_id,
        )
        started = workflow.now()
        while True:
            try:
                outcome = await workflow.execute_activity_method(
                    GatewayActivities.refund,
                    request,
                    start_to_close_timeout=self._gateway_timeout(),
                    retry_policy=self._gateway_retry(),
                    summary="refund at gateway",
                )
            except ActivityError as error:
                cause = error.cause
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    # Our request was refused as invalid: nothing was refunded.
                    return RefundOutcome(
                        state=RefundState.FAILED,
                        failure=Failure(code="gateway_rejected_request", message=cause.message),
                    )
                self._warn_if_late(started)
                await workflow.sleep(
                    timedelta(seconds=self._settings.webhook_timeout_seconds),
                    summary="gateway unreachable: wait, then ask again with the same key",
                )
                continue
            if outcome.refund_reference and self._reference is None:
                self._reference = outcome.refund_reference
                await workflow.execute_local_activity_method(
                    RefundLedgerActivities.record_reference,
                    RefundSettlement(
                        refund_id=self._request.refund_id,
                        status=outcome.state,
                        refund_reference=outcome.refund_reference,
                    ),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=LEDGER_RETRY,
                    summary="ledger: refund reference",
                )
            return outcome

    async def _follow_until_final(self, gateway: GatewayName) -> RefundOutcome:
        """Wait for the refund's webhook; at each deadline ask the gateway instead."""
        started = workflow.now()
        while True:
            event = self._next_event()
            if event is not None:
                return event
            wait = (
                LATE_RECONCILE_EVERY
                if self._late
                else timedelta(seconds=self._settings.webhook_timeout_seconds)
            )
            try:
                await workflow.wait_condition(
                    lambda: self._next_event() is not None,
                    timeout=wait,
                    timeout_summary="refund webhook deadline",
                )
                continue
            except TimeoutError:
                pass
            found = await self._reconcile(gateway)
            if found is not None and found.state in FINAL:
                return found
            self._warn_if_late(started)

    def _refund_gateway(self) -> GatewayName | None:
        """The gateway that charged the payment, so refunds it; None before the reservation."""
        return self._reservation.gateway if self._reservation is not None else None

    def _next_event(self) -> RefundOutcome | None:
        for event in self._events:
            notice = event.refund
            if notice is None or notice.state not in FINAL:
                continue
            if event.provider is not (self._refund_gateway() or GatewayName.SANDBOX):
                continue
            ours = notice.refund_id == self._request.refund_id or (
                self._reference is not None and notice.refund_reference == self._reference
            )
            if ours:
                return RefundOutcome(
                    state=notice.state,
                    refund_reference=notice.refund_reference or self._reference,
                    failure=notice.failure,
                )
        return None

    async def _reconcile(self, gateway: GatewayName) -> RefundOutcome | None:
        if self._reference is None:
            return None  # never answered with a reference: only the webhook can tell
        try:
            return await workflow.execute_activity_method(
                GatewayActivities.retrieve_refund,
                RefundLookup(gateway=gateway, refund_reference=self._reference),
                start_to_close_timeout=self._gateway_timeout(),
                retry_policy=self._gateway_retry(),
                summary="reconcile refund with gateway",
            )
        except ActivityError:
            return None

    def _warn_if_late(self, started: datetime) -> None:
        waited = (workflow.now() - started).total_seconds()
        if not self._late and waited >= self._settings.max_wait_seconds:
            self._late = True
            # Never guessed: the refund stays pending, searchable, and is still followed.
            workflow.logger.warning(
                "refund still unsettled after %.0fs", waited, extra=self._log_extra()
            )

    def _log_extra(self) -> dict[str, str]:
        return {"refund_id": self._request.refund_id, "payment_id": self._request.payment_id}

    def _gateway_retry(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=self._settings.gateway_max_attempts,
        )

    def _gateway_timeout(self) -> timedelta:
        return timedelta(seconds=self._settings.gateway_call_timeout_seconds)

    async def _notify_merchant(self, view: RefundView) -> None:
        event_type = _EVENT_TYPE.get(view.status)
        if event_type is None:
            return
        try:
            await workflow.execute_activity_method(
                NotificationActivities.notify_merchant_refund,
                RefundNotification(
                    refund=view, event_type=event_type, merchant_id=self._request.merchant_id
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"notify merchant: {event_type}",
            )
        except ActivityError as error:
            # Recorded by the activity on each try; the refund's outcome stands.
            workflow.logger.warning(
                "refund notification failed: %s", error.cause or error, extra=self._log_extra()
            )
