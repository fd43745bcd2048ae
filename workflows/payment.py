"""PaymentWorkflow: the whole life of one payment, read top to bottom.

received → risk check → charging → awaiting_webhook | requires_action
         → succeeded | failed | blocked | canceled            (automatic capture)
         → authorized → succeeded (captured) | canceled        (manual capture)
         needs_attention / conflicted when a human must look.

The workflow id is ``payment:{merchant}:{idempotency key}``: Temporal's id uniqueness is what
makes a retried request join the same payment instead of charging again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from workflows.retries import LEDGER_RETRY, NOTIFY_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.admission import AdmissionActivities
    from activities.gateway import GatewayActivities
    from activities.ledger import LedgerActivities
    from activities.notify import NotificationActivities
    from activities.risk import RiskActivities
    from paytide import search_attributes as sa
    from workflows.contract import (
        Admission,
        CancelPayment,
        CancelRequest,
        CaptureMethod,
        CapturePayment,
        CaptureRequest,
        ChargeLookup,
        ChargeOutcome,
        ChargeRequest,
        ChargeState,
        Failure,
        GatewayEvent,
        GatewayName,
        InitiateRequest,
        InitiateResult,
        NotificationFailure,
        NotificationInput,
        OperatorAlert,
        PaymentInput,
        PaymentRequest,
        PaymentStatus,
        PaymentView,
        ReconcileRequest,
        RetryNotification,
        ReviewDecision,
        ReviewVerdict,
        RiskAssessment,
        RiskInput,
        Transition,
        waiting_status,
    )
    from workflows.events import CHANNELS, STATUS_EVENTS, Channel, EventType

# Payments started after this change record `received` and `risk_check` and score the risk in one
# local activity (admit_payment); running payments replay the three steps they recorded.
ADMIT_IN_ONE_STEP = "admit-in-one-local-activity"
# Payments started after this change tell the merchant's webhook endpoints when a charge needs the
# customer's action (payment.requires_action); running payments replay without that activity.
EMIT_REQUIRES_ACTION = "emit-requires-action-event"
# `charging` written with the admission, and `awaiting_webhook` (or `requires_action`) by the
# charge activity itself: two local activities fewer before the API's answer (decision 38).
RECORD_WITH_NEIGHBOURS = "record-charging-and-waiting-with-neighbours"

# How often a payment escalated to operators is still reconciled with its gateway.
ATTENTION_RECONCILE_EVERY = timedelta(hours=1)
# Errors that prove the gateway did not process the request (see gateways/base.py).
REFUSED_ERROR_TYPES = frozenset({"GatewayRefused", "GatewayRateLimited"})

WAITING = (ChargeState.PENDING, ChargeState.REQUIRES_ACTION)
# What may end the charge phase, and what may end a capture.
CHARGE_FINAL = frozenset(
    {
        ChargeState.SUCCEEDED,
        ChargeState.AUTHORIZED,
        ChargeState.DECLINED,
        ChargeState.CANCELED,
        ChargeState.RETRYABLE_FAILURE,
    }
)
CAPTURE_FINAL = frozenset({ChargeState.SUCCEEDED, ChargeState.DECLINED})
VOID_FINAL = frozenset({ChargeState.CANCELED, ChargeState.DECLINED})

_OUTCOME_STATUS = {
    ChargeState.SUCCEEDED: PaymentStatus.SUCCEEDED,
    ChargeState.AUTHORIZED: PaymentStatus.AUTHORIZED,
    ChargeState.DECLINED: PaymentStatus.FAILED,
    ChargeState.CANCELED: PaymentStatus.CANCELED,
}
# A ledger activity's argument.
_Written = TypeVar("_Written")
# How a local activity fails for good: its own non-retryable ApplicationError as it is, or an
# ActivityError wrapping the last failure when its retries ran out.
LOCAL_ACTIVITY_FAILURES = (ActivityError, ApplicationError)


@workflow.defn(name="PaymentWorkflow")
class PaymentWorkflow:
    @workflow.init
    def __init__(self, input: PaymentInput) -> None:
        self._request = input.request
        self._settings = input.settings
        self._status = PaymentStatus.RECEIVED
        self._seq = 0
        self._route = list(input.request.route) or [
            input.request.gateway or input.settings.default_gateway
        ]
        self._gateway: GatewayName = self._route[0]
        # Why the gateway changed, recorded with the next charging transition.
        self._switch_reason: str | None = None
        self._attempt = 0
        self._outcome: ChargeOutcome | None = None
        self._risk: RiskAssessment | None = None
        # Search-attribute changes that ride along with the next transition's upsert.
        self._pending_search_attributes: list[SearchAttributeUpdate[Any]] = []
        self._failure: Failure | None = None
        self._initiated = False
        # Set when the payment reached its final status; waiting updates return then.
        self._done = False
        self._cancel: CancelPayment | None = None
        self._cancel_sent = False
        self._capture: CapturePayment | None = None
        # Escalation alerts still being sent (`_alert_beside`).
        self._alerts: list[asyncio.Task[None]] = []
        # What was taken from the card, once the payment succeeded; refunds are bounded by it.
        self._amount_captured: int | None = None
        self._review: ReviewDecision | None = None
        # An operator's request to ask the gateway now; cleared once the reconcile is done.
        self._reconcile_now: ReconcileRequest | None = None
        self._redrive: RetryNotification | None = None
        self._awaiting_redrive = False
        self._following = False
        # Verified gateway events by gateway reference, in arrival order; a webhook may arrive
        # before we know our reference, or out of order.
        self._events: dict[str, list[GatewayEvent]] = {}
        self._seen_events: set[str] = set()
        self._consumed_events: set[str] = set()
        # References of earlier attempts' charges: their events never settle a later attempt.
        self._old_references: set[str] = set()
        # The gateway that produced each reference: only its events may move the charge.
        self._reference_gateways: dict[str, GatewayName] = {}
        self._next_deadline: str | None = None
        # Payments started with RECORD_WITH_NEIGHBOURS let the admission write `charging` and
        # the charge activity write the waiting status; the workflow then only follows along.
        self._record_with_neighbours = False
        self._charging_written = False
        # The waiting transition the charge activity wrote: (seq, status, written at).
        self._waiting_written: tuple[int, PaymentStatus, str] | None = None
        # Why the ledger refused to admit this payment; the initiate update answers with it.
        self._not_admitted: str | None = None
        self._created_at = workflow.now().isoformat()
        self._updated_at = self._created_at

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        self._risk = await self._admission()
        if self._risk.score >= self._settings.risk_block_score:
            await self._finish(
                PaymentStatus.BLOCKED,
                Failure(
                    code="blocked_by_risk",
                    message=f"risk score {self._risk.score} reached the block threshold "
                    f"{self._settings.risk_block_score}",
                ),
            )
        elif self._risk.score >= self._settings.risk_review_score and not await self._approved():
            pass  # rejected, expired or canceled in review: already finished
        elif self._cancel is not None:
            await self._finish(PaymentStatus.CANCELED, reason=self._cancel.reason)
        else:
            await self._charge_until_settled()

        if self._status is PaymentStatus.AUTHORIZED:
            await self._notify_merchant()
            await self._hold_authorization()

        if not await self._notify_merchant():
            await self._hold_for_redrive()
        await self._alerts_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    # ---- Messages -------------------------------------------------------------------------

    @workflow.update
    async def initiate(self, request: InitiateRequest) -> InitiateResult:
        """Answer the API once the gateway has answered the charge (or the payment ended)."""
        await workflow.wait_condition(lambda: self._initiated)
        if self._not_admitted is not None:
            raise self._not_admitted_error()
        return InitiateResult(payment=self._view(), started_by=self._request.request_id)

    @initiate.validator
    def _validate_initiate(self, request: InitiateRequest) -> None:
        if request.fingerprint != self._request.fingerprint:
            raise ApplicationError(
                "this Idempotency-Key was already used with a different request body",
                type="idempotency_key_reused",
                non_retryable=True,
            )

    @workflow.update
    async def cancel(self, request: CancelPayment) -> PaymentView:
        self._cancel = request
        await workflow.wait_condition(lambda: self._done)
        return self._view()

    @cancel.validator
    def _validate_cancel(self, request: CancelPayment) -> None:
        if self._capture is not None and not self._done:
            raise ApplicationError(
                "this payment is being captured; it can no longer be canceled (refund it once "
                "the capture has succeeded)",
                type="payment_not_cancelable",
                non_retryable=True,
            )
        if self._done:
            raise ApplicationError(
                f"payment is {self._status.value}; only a payment that is not yet captured "
                "or final can be canceled",
                type="payment_not_cancelable",
                non_retryable=True,
            )

    @workflow.update
    async def capture(self, request: CapturePayment) -> PaymentView:
        self._capture = request
        await workflow.wait_condition(lambda: self._done)
        return self._view()

    @capture.validator
    def _validate_capture(self, request: CapturePayment) -> None:
        if (self._capture or self._cancel) and not self._done:
            doing = "captured" if self._capture else "canceled"
            raise ApplicationError(
                f"this payment is already being {doing}; wait for that to finish (GET the "
                "payment) instead of capturing it again",
                type="payment_not_capturable",
                non_retryable=True,
            )
        if self._status is not PaymentStatus.AUTHORIZED or self._capture or self._cancel:
            raise ApplicationError(
                f"payment is {self._status.value}; only an authorized payment can be captured",
                type="payment_not_capturable",
                non_retryable=True,
            )
        amount = request.amount_minor
        if amount is not None and not 0 < amount <= self._request.amount_minor:
            raise ApplicationError(
                f"capture amount must be between 1 and {self._request.amount_minor}",
                type="invalid_capture_amount",
                non_retryable=True,
            )

    @workflow.update
    async def review(self, decision: ReviewDecision) -> PaymentView:
        """An operator approves or rejects a payment in review; repeating it changes nothing."""
        self._review = self._review or decision
        await workflow.wait_condition(lambda: self._status is not PaymentStatus.IN_REVIEW)
        return self._view()

    @review.validator
    def _validate_review(self, decision: ReviewDecision) -> None:
        if self._review is not None:
            if self._review.verdict is not decision.verdict:
                raise ApplicationError(
                    f"this payment was already reviewed: {self._review.verdict.value} by "
                    f"{self._review.reviewer}",
                    type="review_conflict",
                    non_retryable=True,
                )
            return  # the same decision again: idempotent
        if self._status is not PaymentStatus.IN_REVIEW:
            raise ApplicationError(
                f"payment is {self._status.value}, not in review",
                type="payment_not_in_review",
                non_retryable=True,
            )

    @workflow.update
    async def reconcile_now(self, request: ReconcileRequest) -> PaymentView:
        """An operator asks the gateway now, instead of waiting for the next deadline."""
        self._reconcile_now = request
        await workflow.wait_condition(lambda: self._reconcile_now is None or self._done)
        return self._view()

    @reconcile_now.validator
    def _validate_reconcile_now(self, request: ReconcileRequest) -> None:
        if not self._following or self._done:
            raise ApplicationError(
                f"payment is {self._status.value}: it is not waiting on the gateway, so there "
                "is nothing to reconcile",
                type="nothing_to_reconcile",
                non_retryable=True,
            )
        if not request.operator.strip() or not request.reason.strip():
            raise ApplicationError(
                "reconcile_now needs the operator's name and a reason (both are recorded)",
                type="invalid_request",
                non_retryable=True,
            )

    @workflow.update
    async def retry_notification(self, request: RetryNotification) -> PaymentView:
        """An operator re-drives the merchant notification that exhausted its retries."""
        self._redrive = request
        await workflow.wait_condition(lambda: self._redrive is None)
        return self._view()

    @retry_notification.validator
    def _validate_retry_notification(self, request: RetryNotification) -> None:
        if not self._awaiting_redrive or self._redrive is not None:
            raise ApplicationError(
                "no failed notification is waiting for a re-drive on this payment",
                type="nothing_to_redrive",
                non_retryable=True,
            )
        if not request.operator.strip() or not request.reason.strip():
            raise ApplicationError(
                "retry_notification needs the operator's name and a reason (both are recorded)",
                type="invalid_request",
                non_retryable=True,
            )

    @workflow.signal
    def gateway_event(self, event: GatewayEvent) -> None:
        # Event ids are unique within one gateway only.
        key = _event_key(event)
        if key in self._seen_events or not event.gateway_reference:
            return
        charged_by = self._reference_gateways.get(event.gateway_reference)
        if charged_by is not None and event.provider is not charged_by:
            # A signed event is evidence about its own gateway's charges only (`_next_event`
            # also drops one that arrived before the reference was ours).
            workflow.logger.warning(
                "ignored %s event %s: reference %s was charged through %s",
                event.provider.value,
                event.event_id,
                event.gateway_reference,
                charged_by.value,
                extra={"payment_id": self._request.payment_id},
            )
            return
        self._seen_events.add(key)
        self._events.setdefault(event.gateway_reference, []).append(event)

    @workflow.query
    def status(self) -> PaymentView:
        return self._view()

    # ---- Manual review --------------------------------------------------------------------

    async def _approved(self) -> bool:
        """Hold a risky payment for an operator. True when approved; otherwise it is finished."""
        self._initiated = True
        await self._transition(
            PaymentStatus.IN_REVIEW,
            reason=f"risk score {self._risk.score if self._risk else '?'} needs a review",
        )
        await self._alert_operators(EventType.PAYMENT_IN_REVIEW)
        timeout = timedelta(seconds=self._settings.review_timeout_seconds)
        self._next_deadline = (workflow.now() + timeout).isoformat()
        try:
            await workflow.wait_condition(
                lambda: self._review is not None or self._cancel is not None,
                timeout=timeout,
                timeout_summary="review deadline",
            )
        except TimeoutError:
            pass
        self._next_deadline = None
        decision = self._review
        if decision is None and self._cancel is not None:
            await self._finish(PaymentStatus.CANCELED, reason=self._cancel.reason)
            return False
        if decision is None:
            await self._finish(
                PaymentStatus.BLOCKED,
                Failure(
                    code="review_timeout",
                    message="no operator decided within the review deadline; rejected",
                ),
            )
            return False
        said = f"{decision.verdict.value} by {decision.reviewer}: {decision.reason}"
        if decision.verdict is ReviewVerdict.REJECT:
            await self._finish(
                PaymentStatus.BLOCKED,
                Failure(code="rejected_in_review", message=said),
                reason=said,
            )
            return False
        self._switch_reason = said  # recorded with the charging transition
        return True

    async def _alert_operators(
        self, kind: EventType, *, reason: str | None = None, unrecoverable_step: str | None = None
    ) -> None:
        await self._send_alert(
            OperatorAlert(
                payment=self._view(),
                kind=kind,
                reason=reason,
                unrecoverable_step=unrecoverable_step,
            )
        )

    async def _send_alert(self, alert: OperatorAlert) -> None:
        kind = alert.kind
        try:
            await workflow.execute_activity_method(
                NotificationActivities.alert_operators,
                alert,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"alert operators: {kind}",
            )
        except ActivityError:
            # An alert that cannot be delivered must not hold the payment; the review queue
            # (GET /reviews) and the PaymentStatus search attribute still show it.
            workflow.logger.warning(
                "operator alert failed", extra={"payment_id": self._request.payment_id}
            )

    # ---- The charge -----------------------------------------------------------------------

    async def _charge_until_settled(self) -> None:
        settings = self._settings
        while True:
            self._attempt += 1
            # A new attempt never inherits the previous attempt's charge or its events.
            if self._outcome is not None and self._outcome.gateway_reference:
                self._old_references.add(self._outcome.gateway_reference)
            self._outcome = None
            reason, self._switch_reason = self._switch_reason, None
            if self._charging_written:
                # The admission wrote this attempt's `charging`; the Web UI's line learns the
                # attempt number only now.
                self._charging_written = False
                workflow.set_current_details(self._current_details(reason))
            else:
                await self._transition(PaymentStatus.CHARGING, gateway=self._gateway, reason=reason)
            outcome = await self._charge_once()
            if outcome is not None and outcome.state is ChargeState.NOT_FOUND:
                continue  # failed over: the next gateway gets a new attempt at once
            if outcome is not None:
                outcome = await self._follow_until_final(outcome)
            if outcome is not None and outcome.state is ChargeState.NOT_FOUND:
                # Followed by key until the gateway proved there was never a charge.
                if await self._not_charged() is not None:
                    continue
                return
            if outcome is None:
                return  # finished inside the helpers
            if outcome.state is not ChargeState.RETRYABLE_FAILURE:
                await self._settle(outcome)
                return
            if self._attempt >= settings.max_charge_attempts:
                await self._finish(
                    PaymentStatus.FAILED,
                    outcome.failure
                    or Failure(code="retries_exhausted", message="gateway kept failing"),
                )
                return
            backoff = settings.charge_retry_backoff_seconds * 2 ** (self._attempt - 1)
            if await self._canceled_within(timedelta(seconds=backoff)):
                await self._finish(PaymentStatus.CANCELED, reason=self._cancel_reason())
                return

    async def _charge_once(self) -> ChargeOutcome | None:
        """One charge attempt with its own gateway key; None when the payment was finished."""
        key = self._charge_key(self._attempt)
        request = ChargeRequest(
            payment_id=self._request.payment_id,
            workflow_id=workflow.info().workflow_id,
            merchant_id=self._request.merchant_id,
            gateway=self._gateway,
            idempotency_key=key,
            amount_minor=self._request.amount_minor,
            currency=self._request.currency,
            payment_method=self._request.payment_method,
            customer_id=self._request.customer_id,
            capture=self._request.capture,
            description=self._request.description,
            metadata=self._request.metadata,
            record_waiting=self._waiting_template() if self._record_with_neighbours else None,
        )
        try:
            outcome = await workflow.execute_activity_method(
                GatewayActivities.charge,
                request,
                start_to_close_timeout=self._gateway_timeout(),
                retry_policy=self._gateway_retry(),
                summary=f"charge via {self._gateway.value} (attempt {self._attempt})",
            )
        except ActivityError as error:
            self._skip_reserved(request.record_waiting)
            return await self._after_charge_error(error, key)
        self._note_written_waiting(request.record_waiting, outcome)
        self._record_outcome(outcome)
        return outcome

    def _waiting_template(self) -> Transition:
        """The waiting transition the charge activity writes if the gateway answers "pending" or
        "requires action"; its sequence number is reserved for it whatever the answer."""
        return self._build(PaymentStatus.AWAITING_WEBHOOK, seq=self._seq + 1)

    def _skip_reserved(self, template: Transition | None) -> None:
        # An earlier try of the activity may have written the reserved number before this one
        # failed, so the number is never given to another transition: gaps are allowed, reuse
        # would lose the later transition (the ledger keeps the first event per number).
        if template is not None:
            self._seq = max(self._seq, template.seq)

    def _note_written_waiting(self, template: Transition | None, outcome: ChargeOutcome) -> None:
        status = waiting_status(outcome.state)
        if template is None:
            return
        if status is None or outcome.recorded_at is None:
            self._skip_reserved(template)
            return
        self._waiting_written = (template.seq, status, outcome.recorded_at)

    async def _after_charge_error(self, error: ActivityError, key: str) -> ChargeOutcome | None:
        cause = error.cause
        error_type = cause.type if isinstance(cause, ApplicationError) else None
        if error.retry_state is RetryState.NON_RETRYABLE_FAILURE:
            # The gateway refused the request itself (bad credentials, our bug): no charge exists.
            await self._finish(
                PaymentStatus.FAILED,
                Failure(
                    code=_snake(error_type or "gateway_error"),
                    message=str(cause or error),
                    retryable=False,
                ),
            )
            return None
        if error_type in REFUSED_ERROR_TYPES:
            # The last try with this key was refused before processing: had an earlier try
            # charged, the gateway would have answered with that charge instead.
            found: ChargeOutcome | None = ChargeOutcome(state=ChargeState.NOT_FOUND)
        else:
            # Transport retries ran out ambiguously (timeouts, 500s). A request may have reached
            # the gateway, so ask before deciding; never retry elsewhere on an unknown outcome.
            found = await self._reconcile(ChargeLookup(gateway=self._gateway, idempotency_key=key))
        if found is None or (found.state is ChargeState.NOT_FOUND and not found.conclusive):
            await self._escalate("charge outcome unknown after retries: gateway did not say")
            # Keep following the charge by its key: a webhook or a later reconcile decides.
            return ChargeOutcome(state=ChargeState.PENDING)
        if found.state is not ChargeState.NOT_FOUND:
            self._record_outcome(found)
            return found
        return await self._not_charged()

    async def _not_charged(self) -> ChargeOutcome | None:
        """This attempt provably charged nothing: fail over to the next routed gateway (then
        NOT_FOUND is returned, and a new attempt follows), or fail the payment (None)."""
        position = self._route.index(self._gateway)
        if position + 1 < len(self._route):
            # Provably not charged here, so another gateway cannot make it a double charge.
            failed = self._gateway
            self._gateway = self._route[position + 1]
            self._switch_reason = (
                f"failover: {failed.value} did not process attempt {self._attempt}; "
                f"trying {self._gateway.value}"
            )
            workflow.logger.warning(self._switch_reason)
            return ChargeOutcome(state=ChargeState.NOT_FOUND)
        await self._finish(
            PaymentStatus.FAILED,
            Failure(
                code="gateway_unavailable",
                message=f"{self._gateway.value} did not process the charge after retries; "
                "nothing was charged",
                retryable=True,
            ),
        )
        return None

    async def _follow_until_final(self, outcome: ChargeOutcome) -> ChargeOutcome:
        """Wait on webhooks (and reconcile on deadlines) until the gateway gives a final word."""
        started = workflow.now()
        max_wait = timedelta(seconds=self._settings.max_webhook_wait_seconds)
        wait = timedelta(seconds=self._settings.webhook_timeout_seconds)
        while outcome.state in WAITING:
            waiting = (
                PaymentStatus.REQUIRES_ACTION
                if outcome.state is ChargeState.REQUIRES_ACTION
                else PaymentStatus.AWAITING_WEBHOOK
            )
            if self._status not in (waiting, PaymentStatus.NEEDS_ATTENTION):
                await self._enter_waiting(waiting, outcome)
                # Released first: the initiate update answers without waiting for the fan-out.
                self._initiated = True
                if waiting is PaymentStatus.REQUIRES_ACTION and workflow.patched(
                    EMIT_REQUIRES_ACTION
                ):
                    await self._emit_to_endpoints(EventType.PAYMENT_REQUIRES_ACTION)
            self._initiated = True
            self._next_deadline = (workflow.now() + wait).isoformat()
            try:
                self._following = True
                await workflow.wait_condition(
                    lambda: (
                        self._next_event(CHARGE_FINAL) is not None
                        or self._cancel_pending()
                        or self._reconcile_now is not None
                    ),
                    timeout=wait,
                    timeout_summary="webhook deadline",
                )
            except TimeoutError:
                pass
            self._following = False
            self._next_deadline = None
            asked = self._reconcile_now
            if asked is not None:
                await self._transition(
                    self._status,
                    reason=f"reconcile_now by {asked.operator}: {asked.reason}",
                )
            event = self._take_event(CHARGE_FINAL)
            if event is not None:
                return self._outcome_from_event(event)
            if self._cancel is not None:
                # Sent again at every deadline until the gateway answers: same key, idempotent.
                outcome = await self._cancel_at_gateway(outcome)
                if outcome.state not in WAITING:
                    return outcome
            else:
                reconciled = await self._reconcile(self._lookup())
                if reconciled is not None and reconciled.state in CHARGE_FINAL:
                    return self._record_outcome(reconciled)
                if reconciled is not None and reconciled.state in WAITING:
                    outcome = self._record_outcome(reconciled)
                self._reconcile_now = None
                if (
                    reconciled is not None
                    and reconciled.state is ChargeState.NOT_FOUND
                    and reconciled.conclusive
                    and outcome.gateway_reference is None
                ):
                    return reconciled  # the charge provably never happened
            if workflow.now() - started >= max_wait:
                if self._status is not PaymentStatus.NEEDS_ATTENTION:
                    await self._escalate("no final answer from the gateway within the maximum wait")
                wait = ATTENTION_RECONCILE_EVERY
        return outcome

    async def _settle(self, outcome: ChargeOutcome) -> None:
        if self._conflicts(outcome):
            mismatch = Failure(
                code="amount_mismatch",
                message=f"gateway reported {outcome.amount_minor} {outcome.currency}, "
                f"payment is {self._request.amount_minor} {self._request.currency}",
            )
            await self._end_conflicted(mismatch)
            return
        status = _OUTCOME_STATUS.get(outcome.state)
        if status is None:
            await self._escalate(f"unexpected gateway state {outcome.state.value}")
            return
        if status is PaymentStatus.AUTHORIZED:
            # The funds are held; the capture (or the void) comes later in this workflow.
            self._initiated = True
            await self._transition(PaymentStatus.AUTHORIZED)
            return
        reason = self._cancel.reason if status is PaymentStatus.CANCELED and self._cancel else None
        failure = outcome.failure if status is PaymentStatus.FAILED else None
        if status is PaymentStatus.SUCCEEDED:
            self._amount_captured = self._request.amount_minor  # automatic capture takes it all
        await self._finish(status, failure, reason=reason)

    async def _end_conflicted(self, mismatch: Failure) -> None:
        """The gateway contradicts the payment: conflicted, and the operators are alerted (the
        merchant's callback and endpoints hear of it with the final notification)."""
        await self._finish(PaymentStatus.CONFLICTED, mismatch)
        self._alert_beside(EventType.PAYMENT_CONFLICTED, reason=mismatch.message)

    async def _enter_waiting(self, waiting: PaymentStatus, outcome: ChargeOutcome) -> None:
        written, self._waiting_written = self._waiting_written, None
        if written is not None and written[1] is waiting and written[0] == self._seq + 1:
            # The charge activity wrote it; the workflow only follows.
            self._enter(waiting, gateway_reference=outcome.gateway_reference, at=written[2])
            return
        if written is not None:
            self._skip_reserved(self._build(waiting, seq=written[0]))
        await self._transition(waiting, gateway_reference=outcome.gateway_reference)

    def _conflicts(self, outcome: ChargeOutcome) -> bool:
        return outcome.amount_minor is not None and (
            outcome.amount_minor != self._request.amount_minor
            or (outcome.currency or "").upper() != self._request.currency
        )

    # ---- Manual capture -------------------------------------------------------------------

    async def _hold_authorization(self) -> None:
        """Wait for the merchant's capture or cancel; void the authorization when it expires."""
        ttl = timedelta(seconds=self._settings.authorization_ttl_seconds)
        self._next_deadline = (workflow.now() + ttl).isoformat()
        try:
            await workflow.wait_condition(
                lambda: self._capture is not None or self._cancel is not None,
                timeout=ttl,
                timeout_summary="authorization expiry",
            )
        except TimeoutError:
            pass
        self._next_deadline = None
        if self._capture is None:
            reason = self._cancel.reason if self._cancel else "authorization_expired"
            assert self._outcome is not None
            voided = await self._cancel_at_gateway(self._outcome)
            if voided.state in (*WAITING, ChargeState.AUTHORIZED):
                voided = await self._await_event(VOID_FINAL)
            if voided.state is ChargeState.CANCELED:
                await self._finish(PaymentStatus.CANCELED, reason=reason)
            else:
                # The gateway would not void it: the authorization stands until someone looks.
                await self._escalate(f"void refused by the gateway ({voided.state.value})")
                await self._finish(
                    PaymentStatus.FAILED,
                    voided.failure or Failure(code="void_failed", message="void refused"),
                )
            return
        captured = await self._capture_at_gateway(self._capture)
        if captured.state in (*WAITING, ChargeState.AUTHORIZED):
            captured = await self._await_event(CAPTURE_FINAL)
        if captured.state is ChargeState.SUCCEEDED:
            await self._settle_capture(captured)
        else:
            await self._finish(
                PaymentStatus.FAILED,
                captured.failure or Failure(code="capture_failed", message="capture refused"),
            )

    async def _settle_capture(self, outcome: ChargeOutcome) -> None:
        """Succeeded, with what the gateway says it captured (what was asked when it does not
        say). A capture the authorization cannot cover is ``conflicted``, for an operator."""
        asked = self._capture_amount()
        amount, currency = self._request.amount_minor, self._request.currency
        captured = asked if outcome.amount_captured is None else outcome.amount_captured
        said_currency = (outcome.currency or currency).upper()
        if not 0 < captured <= amount or said_currency != currency:
            await self._end_conflicted(
                Failure(
                    code="amount_mismatch",
                    message=f"gateway reported {captured} {said_currency} captured, "
                    f"the authorization is {amount} {currency}",
                )
            )
            return
        if captured != asked:
            workflow.logger.warning(
                "gateway captured %d, %d was asked",
                captured,
                asked,
                extra={"payment_id": self._request.payment_id},
            )
        self._amount_captured = captured
        await self._finish(
            PaymentStatus.SUCCEEDED,
            reason=f"captured {captured} of the {amount} authorized ({currency} minor units)",
        )

    def _capture_amount(self) -> int:
        asked = self._capture.amount_minor if self._capture else None
        return asked or self._request.amount_minor

    async def _capture_at_gateway(self, request: CapturePayment) -> ChargeOutcome:
        assert self._outcome is not None and self._outcome.gateway_reference is not None
        return await workflow.execute_activity_method(
            GatewayActivities.capture,
            CaptureRequest(
                gateway=self._gateway,
                gateway_reference=self._outcome.gateway_reference,
                idempotency_key=f"{self._charge_key(self._attempt)}/capture",
                amount_minor=request.amount_minor or self._request.amount_minor,
                currency=self._request.currency,
            ),
            start_to_close_timeout=self._gateway_timeout(),
            retry_policy=self._gateway_retry(),
            summary="capture at gateway",
        )

    async def _await_event(self, accept: frozenset[ChargeState]) -> ChargeOutcome:
        """Wait for the gateway's word on a modification (capture, void): its webhook, or its
        answer when asked at each deadline. Past the maximum wait the operators are alerted once,
        and the gateway is still asked, hourly, until it says."""
        started = workflow.now()
        wait = timedelta(seconds=self._settings.webhook_timeout_seconds)
        max_wait = timedelta(seconds=self._settings.max_webhook_wait_seconds)
        escalated = False
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._next_event(accept) is not None,
                    timeout=wait,
                    timeout_summary="gateway confirmation deadline",
                )
            except TimeoutError:
                found = await self._reconcile(self._lookup())
                if found is not None and found.state in accept:
                    return self._record_outcome(found)
                if not escalated and workflow.now() - started >= max_wait:
                    escalated = True
                    wait = ATTENTION_RECONCILE_EVERY
                    await self._escalate("the gateway never confirmed the capture or void")
                continue
            event = self._take_event(accept)
            assert event is not None
            return ChargeOutcome(
                state=event.state,
                gateway_reference=event.gateway_reference,
                failure=event.failure,
                amount_minor=event.amount_minor,
                currency=event.currency,
                amount_captured=event.amount_captured,
            )

    # ---- Cancel ---------------------------------------------------------------------------

    def _cancel_pending(self) -> bool:
        return self._cancel is not None and not self._cancel_sent

    def _cancel_reason(self) -> str:
        return self._cancel.reason if self._cancel else "requested_by_merchant"

    async def _canceled_within(self, duration: timedelta) -> bool:
        """Sleep for ``duration``; True at once if the payment is canceled meanwhile."""
        try:
            await workflow.wait_condition(
                lambda: self._cancel is not None,
                timeout=duration,
                timeout_summary="backoff before next charge",
            )
        except TimeoutError:
            return False
        return True

    async def _cancel_at_gateway(self, outcome: ChargeOutcome) -> ChargeOutcome:
        """Void the charge at the gateway. Without a reference, find the charge by key first.

        Called once when the cancel arrives, then again at every deadline while the gateway has
        not said; ``_cancel_sent`` only stops the wait from waking again for the same request."""
        self._cancel_sent = True
        reference = outcome.gateway_reference
        if reference is None:
            found = await self._reconcile(self._lookup())
            if found is None or (found.state is ChargeState.NOT_FOUND and not found.conclusive):
                return outcome  # unknown: keep waiting for the gateway's word
            if found.state is ChargeState.NOT_FOUND:
                return ChargeOutcome(state=ChargeState.CANCELED)
            outcome = self._record_outcome(found)
            reference = outcome.gateway_reference
            if reference is None or outcome.state not in (*WAITING, ChargeState.AUTHORIZED):
                return outcome
        result = await workflow.execute_activity_method(
            GatewayActivities.cancel,
            CancelRequest(
                gateway=self._gateway,
                gateway_reference=reference,
                idempotency_key=f"{self._charge_key(self._attempt)}/cancel",
            ),
            start_to_close_timeout=self._gateway_timeout(),
            retry_policy=self._gateway_retry(),
            summary="cancel at gateway",
        )
        if result.state in WAITING:
            # Accepted but not yet done (Adyen confirms by webhook): keep the charge as it was.
            return outcome
        return self._record_outcome(result)

    async def _reconcile(self, lookup: ChargeLookup) -> ChargeOutcome | None:
        """Ask the gateway for the charge's state; None when the gateway cannot be reached."""
        try:
            return await workflow.execute_activity_method(
                GatewayActivities.reconcile,
                lookup,
                start_to_close_timeout=self._gateway_timeout(),
                retry_policy=self._gateway_retry(),
                summary="reconcile with gateway",
            )
        except ActivityError:
            return None

    # ---- Helpers that read state ----------------------------------------------------------

    def _gateway_retry(self) -> RetryPolicy:
        # Transport trouble is retried inside one charge attempt, with the same gateway key.
        return RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=self._settings.gateway_max_attempts,
        )

    def _gateway_timeout(self) -> timedelta:
        return timedelta(seconds=self._settings.gateway_call_timeout_seconds)

    def _charge_key(self, attempt: int) -> str:
        # Derived from the workflow's own attempt counter, never the activity's retry attempt:
        # a retried activity reuses the key, so the gateway can never charge twice for it.
        return f"{workflow.info().workflow_id}/charge/{attempt}"

    def _lookup(self) -> ChargeLookup:
        reference = self._outcome.gateway_reference if self._outcome else None
        return ChargeLookup(
            gateway=self._gateway,
            gateway_reference=reference,
            idempotency_key=self._charge_key(self._attempt),
        )

    def _next_event(self, accept: frozenset[ChargeState]) -> GatewayEvent | None:
        """The first unconsumed event for the current charge whose state ends this phase."""
        reference = self._outcome.gateway_reference if self._outcome else None
        if reference is not None:
            charged_by = self._reference_gateways.get(reference, self._gateway)
            candidates = [e for e in self._events.get(reference, []) if e.provider is charged_by]
        else:
            # The charge's reference never reached us (every try ended ambiguously): the
            # gateway's own event names it, through our payment id and the current gateway.
            candidates = [
                event
                for ref, events in self._events.items()
                if ref not in self._old_references
                for event in events
                if event.payment_id == self._request.payment_id and event.provider is self._gateway
            ]
        for event in candidates:
            if _event_key(event) not in self._consumed_events and self._read(event) in accept:
                return event
        return None

    def _take_event(self, accept: frozenset[ChargeState]) -> GatewayEvent | None:
        event = self._next_event(accept)
        if event is not None:
            self._consumed_events.add(_event_key(event))
        return event

    def _read(self, event: GatewayEvent) -> ChargeState:
        """An event's state for this payment: an authorization is success with auto-capture."""
        automatic = self._request.capture is CaptureMethod.AUTOMATIC
        if automatic and event.state is ChargeState.AUTHORIZED:
            return ChargeState.SUCCEEDED
        return event.state

    def _outcome_from_event(self, event: GatewayEvent) -> ChargeOutcome:
        return self._record_outcome(
            ChargeOutcome(
                state=self._read(event),
                gateway_reference=event.gateway_reference,
                failure=event.failure,
                amount_minor=event.amount_minor,
                currency=event.currency,
            )
        )

    def _record_outcome(self, outcome: ChargeOutcome) -> ChargeOutcome:
        if outcome.gateway_reference:
            self._reference_gateways.setdefault(outcome.gateway_reference, self._gateway)
        previous = self._outcome
        if previous is not None and outcome.gateway_reference is None:
            outcome = ChargeOutcome(
                state=outcome.state,
                gateway_reference=previous.gateway_reference,
                client_secret=outcome.client_secret,
                next_action=outcome.next_action,
                failure=outcome.failure,
                amount_minor=outcome.amount_minor,
                currency=outcome.currency,
            )
        self._outcome = outcome
        if outcome.state not in WAITING:
            self._initiated = True
        return outcome

    def _view(self) -> PaymentView:
        outcome = self._outcome
        requires_action = self._status is PaymentStatus.REQUIRES_ACTION
        return PaymentView(
            payment_id=self._request.payment_id,
            workflow_id=workflow.info().workflow_id,
            status=self._status,
            amount_minor=self._request.amount_minor,
            currency=self._request.currency,
            customer_id=self._request.customer_id,
            order_id=self._request.order_id,
            capture=self._request.capture,
            gateway=self._gateway if self._attempt else None,
            gateway_reference=outcome.gateway_reference if outcome else None,
            client_secret=outcome.client_secret if outcome and requires_action else None,
            next_action=outcome.next_action if outcome and requires_action else None,
            risk_score=self._risk.score if self._risk else None,
            risk_factors=list(self._risk.factors) if self._risk else [],
            failure=self._failure,
            charge_attempts=self._attempt,
            next_deadline=self._next_deadline,
            created_at=self._created_at,
            updated_at=self._updated_at,
            customer_email=self._request.customer_email,
            amount_captured=self._amount_captured,
        )

    # ---- Recording ------------------------------------------------------------------------

    async def _admission(self) -> RiskAssessment:
        """``received`` and ``risk_check`` in the ledger, and the payment's risk score."""
        # Newest first: a payment started now carries one patch marker, not two (each patch is
        # a marker and a TemporalChangeVersion upsert, two events and a visibility write).
        # RECORD_WITH_NEIGHBOURS implies the one-step admission.
        if self._records_with_neighbours():
            self._record_with_neighbours = True
            return await self._admit()
        if workflow.patched(ADMIT_IN_ONE_STEP):
            return await self._admit()
        self._upsert_static_search_attributes()
        await self._transition(PaymentStatus.RECEIVED, request=self._request)
        await self._transition(PaymentStatus.RISK_CHECK)
        return await self._score_risk()

    async def _admit(self) -> RiskAssessment:
        # Search attributes go in one upsert here and one with the next transition, not five:
        # each upsert is a history event and a visibility write on the server.
        admission = Admission(
            received=self._enter(PaymentStatus.RECEIVED, request=self._request, upsert=False),
            risk_check=self._enter(
                PaymentStatus.RISK_CHECK, extra=self._static_search_attributes()
            ),
        )
        if self._record_with_neighbours:
            settings = self._settings
            admission = replace(
                admission,
                charging=self._build(
                    PaymentStatus.CHARGING, seq=self._seq + 1, gateway=self._gateway
                ),
                charge_below=min(settings.risk_block_score, settings.risk_review_score),
            )
        try:
            risk = await workflow.execute_local_activity_method(
                AdmissionActivities.admit_payment,
                admission,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=LEDGER_RETRY,
                summary="ledger: received, risk_check, charging; fraud score"
                if self._record_with_neighbours
                else "ledger: received, risk_check; fraud score",
            )
        except LOCAL_ACTIVITY_FAILURES as error:
            await self._end_not_admitted(_cause(error))
        self._pending_search_attributes = [sa.RISK_SCORE.value_set(risk.score)]
        self._risk = risk
        if admission.charges_at_once(risk.score):
            # Written in the admission's transaction: followed here at once, before anything
            # else can take its sequence number (a cancel that came meanwhile ends it next).
            self._enter(PaymentStatus.CHARGING, gateway=self._gateway)
            self._charging_written = True
        return risk

    def _records_with_neighbours(self) -> bool:
        return workflow.patched(RECORD_WITH_NEIGHBOURS)

    async def _score_risk(self) -> RiskAssessment:
        risk = await workflow.execute_local_activity_method(
            RiskActivities.score_risk,
            RiskInput(request=self._request),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            summary="fraud score",
        )
        workflow.upsert_search_attributes([sa.RISK_SCORE.value_set(risk.score)])
        return risk

    async def _finish(
        self, status: PaymentStatus, failure: Failure | None = None, *, reason: str | None = None
    ) -> None:
        self._failure = failure
        self._initiated = True
        await self._transition(
            status, failure=failure, reason=reason or (failure.code if failure else None)
        )
        self._done = True

    async def _escalate(self, reason: str) -> None:
        self._initiated = True
        workflow.logger.warning(
            "payment needs attention: %s", reason, extra={"payment_id": self._request.payment_id}
        )
        await self._transition(PaymentStatus.NEEDS_ATTENTION, reason=reason)
        await self._tell_needs_attention(reason)

    async def _tell_needs_attention(
        self, reason: str, *, unrecoverable_step: str | None = None
    ) -> None:
        """The operators' alert and the merchant's endpoints; neither changes the payment."""
        self._alert_beside(
            EventType.PAYMENT_NEEDS_ATTENTION, reason=reason, unrecoverable_step=unrecoverable_step
        )
        await self._emit_to_endpoints(EventType.PAYMENT_NEEDS_ATTENTION)

    def _alert_beside(
        self, kind: EventType, *, reason: str, unrecoverable_step: str | None = None
    ) -> None:
        """An escalation's alert, sent beside the payment: an alert channel that is down or slow
        (NOTIFY_RETRY's tries, minutes in all) must not hold a webhook's settlement or the
        merchant's notification. The workflow ends only once it is done (`_alerts_done`)."""
        # The payment as it is now, whenever the task first runs.
        alert = OperatorAlert(
            payment=self._view(), kind=kind, reason=reason, unrecoverable_step=unrecoverable_step
        )
        self._alerts.append(asyncio.create_task(self._send_alert(alert)))

    async def _alerts_done(self) -> None:
        while self._alerts:
            await self._alerts.pop(0)

    # ---- A step that can never succeed ----------------------------------------------------

    async def _end_not_admitted(self, cause: str) -> NoReturn:
        """The ledger would not take the payment at all: it does not exist, and nothing was
        charged. Tell the operators (and the API's waiting POST), then fail the workflow."""
        self._not_admitted = cause
        # Answered first: the API's POST gets its error without waiting for the alert.
        self._release_waiters()
        workflow.logger.error(
            "payment not admitted: %s", cause, extra={"payment_id": self._request.payment_id}
        )
        await self._alert_operators(
            EventType.PAYMENT_NOT_ADMITTED, reason=cause, unrecoverable_step="admission"
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        raise self._not_admitted_error()

    def _not_admitted_error(self) -> ApplicationError:
        return ApplicationError(
            f"payment {self._request.payment_id} was not admitted, and nothing was charged: "
            f"{self._not_admitted}",
            type="payment_not_admitted",
            non_retryable=True,
        )

    async def _end_ledger_failed(self, cause: str) -> NoReturn:
        """A ledger write can never succeed (or kept failing past LEDGER_RETRY's limit): the
        payment stops in needs_attention, alerted and counted, and the workflow fails naming
        the write; the gateway may hold a charge that an operator must settle."""
        reason = f"ledger write failed: {cause}"
        workflow.logger.error(reason, extra={"payment_id": self._request.payment_id})
        # Not written to the ledger: the ledger is what failed. The search attribute shows it.
        self._enter(PaymentStatus.NEEDS_ATTENTION, reason=reason)
        await self._tell_needs_attention(reason, unrecoverable_step="ledger")
        self._release_waiters()
        await self._alerts_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        raise ApplicationError(
            f"payment {self._request.payment_id} stopped in needs_attention: {reason}",
            type="ledger_write_failed",
            non_retryable=True,
        )

    def _release_waiters(self) -> None:
        """Let every waiting update answer before the workflow fails."""
        self._initiated = True
        self._done = True
        self._reconcile_now = None
        self._redrive = None

    async def _record(
        self,
        activity: Callable[[LedgerActivities, _Written], None],
        written: _Written,
        *,
        summary: str,
    ) -> None:
        """One ledger write of the payment's; see _end_ledger_failed when it cannot be done."""
        try:
            await workflow.execute_local_activity_method(
                activity,
                written,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=LEDGER_RETRY,
                summary=summary,
            )
        except LOCAL_ACTIVITY_FAILURES as error:
            await self._end_ledger_failed(f"{summary}: {_cause(error)}")

    async def _transition(
        self,
        status: PaymentStatus,
        *,
        reason: str | None = None,
        gateway: GatewayName | None = None,
        gateway_reference: str | None = None,
        failure: Failure | None = None,
        request: PaymentRequest | None = None,
    ) -> None:
        transition = self._enter(
            status,
            reason=reason,
            gateway=gateway,
            gateway_reference=gateway_reference,
            failure=failure,
            request=request,
        )
        await self._record(
            LedgerActivities.record_transition, transition, summary=f"ledger: {status.value}"
        )

    def _enter(
        self,
        status: PaymentStatus,
        *,
        reason: str | None = None,
        gateway: GatewayName | None = None,
        gateway_reference: str | None = None,
        failure: Failure | None = None,
        request: PaymentRequest | None = None,
        upsert: bool = True,
        extra: Sequence[SearchAttributeUpdate[Any]] = (),
        at: str | None = None,
    ) -> Transition:
        """Move to ``status`` in the workflow and its search attributes; the ledger write it
        returns is the caller's to run (or was run already, at ``at``)."""
        self._seq += 1
        self._status = status
        self._updated_at = at or workflow.now().isoformat()
        workflow.set_current_details(self._current_details(reason))
        if upsert:
            pairs: list[SearchAttributeUpdate[Any]] = [
                *extra,
                *self._pending_search_attributes,
                sa.PAYMENT_STATUS.value_set(status.value),
            ]
            self._pending_search_attributes = []
            if gateway is not None:
                pairs.append(sa.PAYMENT_GATEWAY.value_set(gateway.value))
            workflow.upsert_search_attributes(pairs)
        workflow.logger.info(
            "payment %s is %s",
            self._request.payment_id,
            status.value,
            extra={"payment_id": self._request.payment_id, "status": status.value},
        )
        return self._build(
            status,
            seq=self._seq,
            reason=reason,
            gateway=gateway,
            gateway_reference=gateway_reference,
            failure=failure,
            request=request,
        )

    def _build(
        self,
        status: PaymentStatus,
        *,
        seq: int,
        reason: str | None = None,
        gateway: GatewayName | None = None,
        gateway_reference: str | None = None,
        failure: Failure | None = None,
        request: PaymentRequest | None = None,
    ) -> Transition:
        """The ledger line for ``status`` at ``seq``, without moving the workflow there."""
        return Transition(
            payment_id=self._request.payment_id,
            workflow_id=workflow.info().workflow_id,
            seq=seq,
            status=status,
            reason=reason,
            gateway=gateway,
            gateway_reference=gateway_reference
            or (self._outcome.gateway_reference if self._outcome else None),
            risk=self._risk,
            failure=failure,
            request=request,
            at=self._updated_at,
            amount_captured=self._amount_captured,
        )

    def _current_details(self, reason: str | None) -> str:
        """The Web UI's live line for this payment: where it stands and what it waits for."""
        lines = [f"**{self._status.value}** via {self._gateway.value}, attempt {self._attempt}"]
        if self._outcome is not None and self._outcome.gateway_reference:
            lines.append(f"gateway reference: {self._outcome.gateway_reference}")
        if self._risk is not None:
            lines.append(f"risk score: {self._risk.score}")
        if reason:
            lines.append(f"last change: {reason}")
        return "\n\n".join(lines)

    def _upsert_static_search_attributes(self) -> None:
        workflow.upsert_search_attributes(self._static_search_attributes())

    def _static_search_attributes(self) -> list[SearchAttributeUpdate[Any]]:
        request = self._request
        return [
            sa.MERCHANT_ID.value_set(request.merchant_id),
            sa.CUSTOMER_ID.value_set(request.customer_search_key or "unknown"),
            sa.AMOUNT_MINOR.value_set(request.amount_minor),
            sa.CURRENCY.value_set(request.currency),
        ]

    async def _hold_for_redrive(self) -> None:
        """The final notification failed: stay open so an operator can re-drive it."""
        window = timedelta(seconds=self._settings.notification_redrive_seconds)
        while True:
            self._awaiting_redrive = True
            try:
                await workflow.wait_condition(
                    lambda: self._redrive is not None,
                    timeout=window,
                    timeout_summary="notification re-drive window",
                )
            except TimeoutError:
                self._awaiting_redrive = False
                return
            redrive = self._redrive
            assert redrive is not None
            self._awaiting_redrive = False
            await self._transition(
                self._status,
                reason=f"retry_notification by {redrive.operator}: {redrive.reason}",
            )
            delivered = await self._notify_merchant()
            self._redrive = None
            if delivered:
                return

    async def _emit_to_endpoints(self, event_type: EventType) -> None:
        """Hand an event to the merchant's webhook endpoints only: the single callback never
        carried intermediate statuses. Their deliveries run detached; this waits for none."""
        try:
            await self._tell_merchant(
                NotificationActivities.emit_merchant_event,
                event_type,
                summary=f"merchant endpoints: {event_type}",
            )
        except ActivityError:
            workflow.logger.warning(
                "merchant event not handed to its endpoints",
                extra={"payment_id": self._request.payment_id, "event_type": event_type},
            )

    async def _tell_merchant(
        self,
        activity: Callable[[NotificationActivities, NotificationInput], Awaitable[Any]],
        event_type: str,
        *,
        summary: str,
    ) -> None:
        """One merchant notification activity about the payment as it stands now."""
        await workflow.execute_activity_method(
            activity,
            NotificationInput(
                payment=self._view(),
                event_type=event_type,
                merchant_id=self._request.merchant_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_RETRY,
            summary=summary,
        )

    async def _notify_merchant(self) -> bool:
        """Tell the merchant about the current status; False when delivery failed for good."""
        event_type = STATUS_EVENTS.get(self._status)
        if event_type is None or Channel.CALLBACK not in CHANNELS[event_type]:
            return True
        try:
            await self._tell_merchant(
                NotificationActivities.notify_merchant,
                event_type,
                summary=f"notify merchant: {event_type}",
            )
        except ActivityError as error:
            # A notification that cannot be delivered is recorded; the payment's outcome stands.
            await self._record(
                LedgerActivities.record_notification_failure,
                NotificationFailure(
                    payment_id=self._request.payment_id,
                    event_type=event_type,
                    error=str(error.cause or error),
                    attempts=NOTIFY_RETRY.maximum_attempts,
                ),
                summary="ledger: notification failed",
            )
            return False
        return True


def _cause(error: ActivityError | ApplicationError) -> str:
    """What made an activity fail for good, in its own words."""
    return str(error.cause or error)


def _event_key(event: GatewayEvent) -> str:
    return f"{event.provider.value}:{event.event_id}"


def _snake(name: str) -> str:
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)
