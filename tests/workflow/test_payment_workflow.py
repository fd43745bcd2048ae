"""Every branch of PaymentWorkflow on the time-skipping Temporal server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from gateways.base import GatewayRefused, GatewayRequestError, GatewayUnavailable
from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.models import Notification
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.harness import (
    SETTINGS,
    Notifier,
    event,
    payment_request,
    running_payments,
)
from workflows.contract import (
    CancelPayment,
    CaptureMethod,
    CapturePayment,
    ChargeOutcome,
    ChargeState,
    Failure,
    GatewayName,
    InitiateRequest,
    NextAction,
    NotificationInput,
    NotificationResult,
    PaymentRequest,
    PaymentStatus,
    PaymentView,
    ReconcileRequest,
    RetryNotification,
    ReviewDecision,
    ReviewVerdict,
)
from workflows.payment import PaymentWorkflow

PENDING = ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_1")


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


def ledger_statuses(engine: Engine, payment_id: str) -> list[str]:
    with transaction(session_factory(engine)) as session:
        return [row.status for row in ledger.list_events(session, payment_id)]


def ledger_row_status(engine: Engine, payment_id: str) -> str | None:
    with transaction(session_factory(engine)) as session:
        row = session.get(ledger.Payment, payment_id)
        return row.status if row else None


async def test_ok_payment_succeeds_on_webhook(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A pending charge succeeds on the gateway's webhook, and every step is in the ledger."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.gateway_reference == "ch_1"
    assert [c.idempotency_key for c in gateway.charge_calls] == [f"{handle.id}/charge/1"]
    assert ledger_statuses(engine, result.payment_id) == [
        "received",
        "risk_check",
        "charging",
        "awaiting_webhook",
        "succeeded",
    ]
    assert ledger_row_status(engine, result.payment_id) == "succeeded"
    assert [n.event_type for n in h.notifier.sent] == ["payment.succeeded"]


async def test_decline_is_final_without_retry(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A decline is an outcome: the payment fails with the gateway's code after one charge."""
    declined = ChargeOutcome(
        state=ChargeState.DECLINED,
        gateway_reference="ch_d",
        failure=Failure(code="card_declined", message="declined"),
    )
    gateway = ScriptedGateway(charges=[declined])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result = await handle.result()

    assert result.status is PaymentStatus.FAILED
    assert result.failure is not None and result.failure.code == "card_declined"
    assert len(gateway.charge_calls) == 1
    assert [n.event_type for n in h.notifier.sent] == ["payment.failed"]


async def test_three_d_secure_returns_client_secret_then_succeeds(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A 3-D Secure challenge is answered with the client secret, and the webhook completes it."""
    challenge = ChargeOutcome(
        state=ChargeState.REQUIRES_ACTION,
        gateway_reference="ch_3ds",
        client_secret="ch_3ds_secret_x",
        next_action=NextAction(type="redirect_to_url", redirect_url="http://sandbox/3ds"),
    )
    gateway = ScriptedGateway(charges=[challenge])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        request = payment_request()
        handle = await h.start(request)
        initiated = await handle.execute_update(
            PaymentWorkflow.initiate, InitiateRequest(fingerprint=request.fingerprint)
        )
        assert initiated.payment.status is PaymentStatus.REQUIRES_ACTION
        assert initiated.payment.client_secret == "ch_3ds_secret_x"
        assert initiated.payment.next_action is not None
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_3ds"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.client_secret is None  # only shown while the challenge is open
    # The merchant's endpoints hear of the challenge, once; the callback only of the outcome.
    assert [(n.event_type, n.payment.status) for n in h.notifier.emitted] == [
        ("payment.requires_action", PaymentStatus.REQUIRES_ACTION)
    ]
    assert [n.event_type for n in h.notifier.sent] == ["payment.succeeded"]


async def test_silent_gateway_is_reconciled_after_the_webhook_deadline(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """With no webhook by the deadline, the workflow asks the gateway and acts on its answer."""
    settled = ChargeOutcome(
        state=ChargeState.SUCCEEDED, gateway_reference="ch_1", amount_minor=2500, currency="EUR"
    )
    gateway = ScriptedGateway(
        charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING), settled]
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert len(gateway.lookup_calls) == 2
    assert gateway.lookup_calls[0].gateway_reference == "ch_1"


async def test_silent_gateway_past_the_maximum_wait_needs_attention(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A charge whose outcome stays unknown is escalated to operators, never guessed."""
    gateway = ScriptedGateway(charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING)])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result_task = asyncio.create_task(handle.result())
        # Let time skip past the maximum wait while the client waits on the result.
        done, _ = await asyncio.wait({result_task}, timeout=3)
        assert not done, "the workflow must keep waiting for a final answer"
        view = await handle.query(PaymentWorkflow.status)
        assert view.status is PaymentStatus.NEEDS_ATTENTION
        # The gateway's late word still settles it.
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await result_task

    assert result.status is PaymentStatus.SUCCEEDED
    assert "needs_attention" in ledger_statuses(engine, result.payment_id)


async def test_flaky_gateway_is_retried_with_the_same_key(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Transport errors are retried by the activity with the same gateway idempotency key."""
    gateway = ScriptedGateway(
        charges=[GatewayUnavailable("503"), GatewayUnavailable("503"), PENDING]
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    keys = {c.idempotency_key for c in gateway.charge_calls}
    assert len(gateway.charge_calls) == 3
    assert keys == {f"{handle.id}/charge/1"}


async def test_retries_exhausted_fail_only_after_the_gateway_confirms_no_charge(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """When transport retries run out, the gateway is asked; no charge there means failed."""
    gateway = ScriptedGateway(charges=[GatewayUnavailable("down")])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result = await handle.result()

    assert result.status is PaymentStatus.FAILED
    assert result.failure is not None
    assert result.failure.code == "gateway_unavailable"
    assert result.failure.retryable is True
    assert len(gateway.charge_calls) == 6  # the activity's maximum attempts
    assert gateway.lookup_calls[0].idempotency_key == f"{handle.id}/charge/1"


async def test_retries_exhausted_but_charge_found_follows_it(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """If the gateway did take the charge despite the errors, the workflow follows that charge."""
    gateway = ScriptedGateway(charges=[GatewayUnavailable("timeout")], lookups=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await time_skipping_env.sleep(90)  # past every activity retry backoff
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert {c.idempotency_key for c in gateway.charge_calls} == {f"{handle.id}/charge/1"}


async def test_bad_credentials_fail_at_once(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A non-retryable gateway error fails the payment without retrying the same request."""
    gateway = ScriptedGateway(charges=[GatewayRequestError("401 invalid api key")])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.FAILED
    assert result.failure is not None and result.failure.code == "gateway_request_error"
    assert len(gateway.charge_calls) == 1


async def test_gateway_retryable_failure_starts_a_new_attempt_with_a_new_key(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A failure the gateway marks retryable is retried as a new charge attempt after backoff."""
    retryable = ChargeOutcome(
        state=ChargeState.RETRYABLE_FAILURE,
        gateway_reference="ch_a",
        failure=Failure(code="processor_unavailable", message="try again", retryable=True),
    )
    succeeded = ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_b")
    gateway = ScriptedGateway(charges=[retryable, succeeded])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.charge_attempts == 2
    assert [c.idempotency_key for c in gateway.charge_calls] == [
        f"{handle.id}/charge/1",
        f"{handle.id}/charge/2",
    ]


async def test_gateway_retryable_failures_up_to_the_attempt_limit_fail(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Charge attempts stop at the configured maximum and the payment fails with the reason."""
    retryable = ChargeOutcome(
        state=ChargeState.RETRYABLE_FAILURE,
        failure=Failure(code="processor_unavailable", message="try again", retryable=True),
    )
    gateway = ScriptedGateway(charges=[retryable])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.FAILED
    assert result.failure is not None and result.failure.code == "processor_unavailable"
    assert len(gateway.charge_calls) == SETTINGS.max_charge_attempts


async def test_high_risk_is_blocked_before_any_gateway_call(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Score >= 80 (large amount, 24 h volume, 5 min velocity, six declines) blocks uncharged."""
    gateway = ScriptedGateway(charges=[PENDING])
    customer = "cus_velocity"
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        # Six earlier payments by the same customer, through the workflow itself (declined).
        gateway.charges = [
            ChargeOutcome(
                state=ChargeState.DECLINED, failure=Failure(code="card_declined", message="no")
            )
        ]
        for _ in range(6):
            await (await h.start(payment_request(customer_id=customer))).result()
        calls_before = len(gateway.charge_calls)
        big = payment_request(customer_id=customer, amount_minor=1_000_001)  # 10,000.01 EUR
        result = await (await h.start(big)).result()

    assert result.status is PaymentStatus.BLOCKED
    assert result.risk_score is not None
    assert result.risk_score >= 80
    # The six declines are also card testing; the request carries no device or country.
    assert {f.name for f in result.risk_factors} == {
        "large_amount",
        "daily_volume",
        "velocity",
        "card_testing",
        "missing_signals",
    }
    assert len(gateway.charge_calls) == calls_before
    assert [n.event_type for n in h.notifier.sent][-1] == "payment.blocked"


async def test_duplicate_and_out_of_order_webhooks_settle_once(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """The same event twice and a stale event after it change nothing: one final transition."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        succeeded = event("ch_1", event_id="evt_same")
        await handle.signal(PaymentWorkflow.gateway_event, succeeded)
        await handle.signal(PaymentWorkflow.gateway_event, succeeded)
        await handle.signal(
            PaymentWorkflow.gateway_event, event("ch_1", ChargeState.DECLINED, event_id="evt_late")
        )
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    statuses = ledger_statuses(engine, result.payment_id)
    assert statuses.count("succeeded") == 1
    assert "failed" not in statuses


async def test_webhook_before_the_wait_is_not_lost(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A webhook that arrives while the charge call is still in flight settles the payment."""
    hold = asyncio.Event()
    gateway = ScriptedGateway(charges=[PENDING], hold_charge=hold)
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await asyncio.wait_for(gateway.charge_started.wait(), timeout=10)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        hold.set()
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert gateway.lookup_calls == []  # settled by the early webhook, not by reconciling


async def test_cancel_before_capture_cancels_at_the_gateway(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """The cancel update voids a pending charge at the gateway and ends the payment canceled."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        view = await handle.execute_update(PaymentWorkflow.cancel, CancelPayment(reason="oops"))
        result = await handle.result()

    assert view.status is PaymentStatus.CANCELED
    assert result.status is PaymentStatus.CANCELED
    assert [c.gateway_reference for c in gateway.cancel_calls] == ["ch_1"]
    with transaction(session_factory(engine)) as session:
        last = ledger.list_events(session, result.payment_id)[-1]
    assert (last.status, last.reason) == ("canceled", "oops")
    assert [n.event_type for n in h.notifier.sent] == ["payment.canceled"]


async def test_cancel_after_success_is_rejected(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A payment that already succeeded cannot be canceled; the update is rejected."""
    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_1")]
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        h.notifier.hold = asyncio.Event()  # the workflow stays open while it notifies
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.SUCCEEDED)
        with pytest.raises(WorkflowUpdateFailedError) as raised:
            await handle.execute_update(PaymentWorkflow.cancel, CancelPayment())
        h.notifier.hold.set()
        result = await handle.result()

    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "payment_not_cancelable"
    assert result.status is PaymentStatus.SUCCEEDED
    assert gateway.cancel_calls == []


async def test_same_key_different_body_is_rejected(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """An initiate update with another request fingerprint is rejected as idempotency_key_reused."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        with pytest.raises(WorkflowUpdateFailedError) as raised:
            await handle.execute_update(
                PaymentWorkflow.initiate, InitiateRequest(fingerprint="another body")
            )
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        await handle.result()

    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "idempotency_key_reused"


async def test_amount_mismatch_is_conflicted_not_succeeded(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A gateway event with another amount marks the payment conflicted for an operator."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1", amount=9999))
        result = await asyncio.wait_for(handle.result(), timeout=timedelta(seconds=20).seconds)

    assert result.status is PaymentStatus.CONFLICTED
    assert result.failure is not None and result.failure.code == "amount_mismatch"


async def test_failover_to_the_next_gateway_only_when_provably_not_charged(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Primary unreachable and holding no charge: the next routed gateway charges, once."""
    primary = ScriptedGateway(charges=[GatewayUnavailable("503")])
    secondary = ScriptedGateway(
        gateway_name=GatewayName.STRIPE,
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="pi_1")],
    )
    async with running_payments(
        time_skipping_env, session_factory(engine), primary, secondary
    ) as h:
        request = payment_request(route=[GatewayName.SANDBOX, GatewayName.STRIPE])
        result = await (await h.start(request)).result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.gateway is GatewayName.STRIPE
    assert len(secondary.charge_calls) == 1
    assert primary.lookup_calls, "the primary must be asked before switching"
    with transaction(session_factory(engine)) as session:
        events = ledger.list_events(session, result.payment_id)
    charging = [e for e in events if e.status == "charging"]
    assert [e.detail.get("gateway") for e in charging] == ["sandbox", "stripe"]
    assert charging[1].reason is not None and charging[1].reason.startswith("failover")


async def test_no_failover_when_the_primary_outcome_is_unknown(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Primary unreachable and unreachable to reconcile too: escalate, never charge elsewhere."""
    primary = ScriptedGateway(
        charges=[GatewayUnavailable("timeout")], lookups=[GatewayUnavailable("down")]
    )
    secondary = ScriptedGateway(gateway_name=GatewayName.STRIPE)
    async with running_payments(
        time_skipping_env, session_factory(engine), primary, secondary
    ) as h:
        request = payment_request(route=[GatewayName.SANDBOX, GatewayName.STRIPE])
        handle = await h.start(request)
        await time_skipping_env.sleep(120)
        view = await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        await handle.terminate("test over")

    assert view.gateway is GatewayName.SANDBOX
    assert secondary.charge_calls == []


async def test_failed_notification_is_recorded_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A merchant endpoint that keeps failing: the payment succeeds; the ledger says failed."""

    class Refusing(Notifier):
        @activity.defn(name="notify_merchant")
        async def notify(self, notification: NotificationInput) -> NotificationResult:
            self.sent.append(notification)
            raise ApplicationError("merchant endpoint answered 500", type="notification_failed")

    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_1")]
    )
    refusing = Refusing()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=refusing
    ) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert len(refusing.sent) == 5
    with transaction(session_factory(engine)) as session:
        row = session.exec(
            select(Notification).where(Notification.payment_id == result.payment_id)
        ).one()
    assert row.status == "failed"
    assert row.event_type == "payment.succeeded"
    assert "500" in (row.last_error or "")


def manual(**overrides: object) -> PaymentRequest:
    return payment_request(capture=CaptureMethod.MANUAL, **overrides)


async def test_manual_capture_holds_then_captures(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """capture=manual: authorized first; the capture update captures at the gateway; succeeded."""
    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.AUTHORIZED, gateway_reference="ch_m")]
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start(manual())
        await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
        view = await handle.execute_update(
            PaymentWorkflow.capture, CapturePayment(amount_minor=2000)
        )
        result = await handle.result()

    assert view.status is PaymentStatus.SUCCEEDED
    assert result.status is PaymentStatus.SUCCEEDED
    assert [(c.gateway_reference, c.amount_minor) for c in gateway.capture_calls] == [
        ("ch_m", 2000)
    ]
    assert [n.event_type for n in h.notifier.sent] == ["payment.authorized", "payment.succeeded"]
    assert ledger_statuses(engine, result.payment_id)[-2:] == ["authorized", "succeeded"]


async def test_authorization_is_voided_when_it_expires(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """An authorization nobody captures is voided at the gateway when its time is up."""
    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.AUTHORIZED, gateway_reference="ch_x")]
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        result = await (await h.start(manual())).result()

    assert result.status is PaymentStatus.CANCELED
    assert [c.gateway_reference for c in gateway.cancel_calls] == ["ch_x"]
    assert gateway.capture_calls == []


async def test_capture_is_rejected_unless_authorized(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Capturing a payment that is still waiting for its webhook is rejected by the validator."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start(manual())
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        with pytest.raises(WorkflowUpdateFailedError) as raised:
            await handle.execute_update(PaymentWorkflow.capture, CapturePayment())
        # An authorization event (as Adyen sends) moves it to authorized, not succeeded.
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1", ChargeState.AUTHORIZED))
        await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
        await handle.execute_update(PaymentWorkflow.cancel, CancelPayment(reason="changed mind"))
        result = await handle.result()

    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "payment_not_capturable"
    assert result.status is PaymentStatus.CANCELED


async def test_authorization_event_is_success_with_automatic_capture(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """With automatic capture, an authorization webhook (Adyen's AUTHORISATION) settles it."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1", ChargeState.AUTHORIZED))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED


async def test_refused_primary_fails_over_without_reconciling(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A primary that refuses every try (503 before processing) is left for the next gateway."""
    primary = ScriptedGateway(charges=[GatewayRefused("503 before processing")])
    secondary = ScriptedGateway(
        gateway_name=GatewayName.ADYEN,
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="psp_1")],
    )
    async with running_payments(
        time_skipping_env, session_factory(engine), primary, secondary
    ) as h:
        request = payment_request(route=[GatewayName.SANDBOX, GatewayName.ADYEN])
        result = await (await h.start(request)).result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.gateway is GatewayName.ADYEN
    assert primary.lookup_calls == []
    assert len(secondary.charge_calls) == 1


async def test_inconclusive_not_found_never_fails_over(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A lookup that may lag (Stripe search) saying 'not found' escalates instead of switching."""
    primary = ScriptedGateway(
        charges=[GatewayUnavailable("500")],
        lookups=[ChargeOutcome(state=ChargeState.NOT_FOUND, conclusive=False)],
    )
    secondary = ScriptedGateway(gateway_name=GatewayName.STRIPE)
    async with running_payments(
        time_skipping_env, session_factory(engine), primary, secondary
    ) as h:
        request = payment_request(route=[GatewayName.SANDBOX, GatewayName.STRIPE])
        handle = await h.start(request)
        await time_skipping_env.sleep(120)
        await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        await handle.terminate("test over")

    assert secondary.charge_calls == []


async def test_a_new_attempt_ignores_the_previous_attempts_events(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """After a retryable failure, attempt 2 waits for its own charge's webhook, not attempt 1's."""
    first = ChargeOutcome(
        state=ChargeState.RETRYABLE_FAILURE,
        gateway_reference="ch_a1",
        failure=Failure(code="processing_error", message="again", retryable=True),
    )
    second = ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_a2")
    gateway = ScriptedGateway(charges=[first, second])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await handle.signal(
            PaymentWorkflow.gateway_event, event("ch_a1", ChargeState.DECLINED, event_id="evt_old")
        )
        await time_skipping_env.sleep(10)
        view = await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        assert view.gateway_reference == "ch_a2"
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_a2"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert len(gateway.charge_calls) == 2


async def test_cancel_without_a_reference_looks_the_charge_up_first(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Cancel on a charge known only by its key finds it at the gateway and voids that charge."""
    gateway = ScriptedGateway(
        charges=[GatewayUnavailable("timeout")],
        lookups=[GatewayUnavailable("down"), GatewayUnavailable("down")],
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await time_skipping_env.sleep(120)
        await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        # The gateway is back and holds the charge the timeouts hid.
        gateway.lookups = [ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_hidden")]
        await handle.execute_update(PaymentWorkflow.cancel, CancelPayment(reason="operator"))
        result = await handle.result()

    assert result.status is PaymentStatus.CANCELED
    assert [c.gateway_reference for c in gateway.cancel_calls] == ["ch_hidden"]


async def test_review_approved_then_charged(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Score 70-79 waits in review and alerts operators; an approval charges it."""
    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_r")]
    )
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, risk_score=75
    ) as h:
        request = payment_request()
        handle = await h.start(request)
        initiated = await handle.execute_update(
            PaymentWorkflow.initiate, InitiateRequest(fingerprint=request.fingerprint)
        )
        assert initiated.payment.status is PaymentStatus.IN_REVIEW
        approve = ReviewDecision(verdict=ReviewVerdict.APPROVE, reviewer="ana", reason="known")
        view = await handle.execute_update(PaymentWorkflow.review, approve)
        again = await handle.execute_update(PaymentWorkflow.review, approve)
        result = await handle.result()

    assert view.status is not PaymentStatus.IN_REVIEW
    assert again.payment_id == view.payment_id  # a repeated decision is accepted, changes nothing
    assert result.status is PaymentStatus.SUCCEEDED
    assert len(gateway.charge_calls) == 1
    assert [a.kind for a in h.notifier.alerts] == ["payment.in_review"]
    with transaction(session_factory(engine)) as session:
        events = ledger.list_events(session, result.payment_id)
    charging = next(e for e in events if e.status == "charging")
    assert charging.reason == "approve by ana: known"


async def test_review_rejected_is_blocked_without_charging(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A rejection blocks the payment with the reviewer's reason; a contrary decision is refused."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, risk_score=72
    ) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.IN_REVIEW)
        reject = ReviewDecision(verdict=ReviewVerdict.REJECT, reviewer="bo", reason="stolen card")
        await handle.execute_update(PaymentWorkflow.review, reject)
        with pytest.raises(WorkflowUpdateFailedError) as raised:
            await handle.execute_update(
                PaymentWorkflow.review,
                ReviewDecision(verdict=ReviewVerdict.APPROVE, reviewer="cy", reason="oops"),
            )
        result = await handle.result()

    assert result.status is PaymentStatus.BLOCKED
    assert result.failure is not None and result.failure.code == "rejected_in_review"
    assert gateway.charge_calls == []
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type in (
        "review_conflict",
        "payment_not_in_review",
    )


async def test_review_deadline_blocks_the_payment(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """No decision by the review deadline: rejected as blocked with that reason."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, risk_score=70
    ) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.BLOCKED
    assert result.failure is not None and result.failure.code == "review_timeout"
    assert gateway.charge_calls == []


async def test_score_at_the_block_threshold_skips_review(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Score 80 blocks at once: no review, no alert wait, no charge."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, risk_score=80
    ) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.BLOCKED
    assert "in_review" not in ledger_statuses(engine, result.payment_id)
    assert gateway.charge_calls == []


async def test_reconcile_now_asks_the_gateway_at_once_and_records_who_asked(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """An operator's reconcile_now checks with the gateway before the deadline, with a reason."""
    settled = ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_1")
    gateway = ScriptedGateway(charges=[PENDING], lookups=[settled])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        view = await handle.execute_update(
            PaymentWorkflow.reconcile_now,
            ReconcileRequest(operator="ana", reason="customer called"),
        )
        result = await handle.result()
        # A closed payment has nothing to reconcile: the server refuses the update.
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await handle.execute_update(
                PaymentWorkflow.reconcile_now, ReconcileRequest(operator="ana", reason="again")
            )

    assert view.status is PaymentStatus.SUCCEEDED
    assert result.status is PaymentStatus.SUCCEEDED
    assert len(gateway.lookup_calls) == 1
    with transaction(session_factory(engine)) as session:
        reasons = [e.reason for e in ledger.list_events(session, result.payment_id)]
    assert "reconcile_now by ana: customer called" in reasons


async def test_operator_redrives_a_failed_notification(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """After retries run out, the payment stays open; retry_notification delivers it."""

    class DownThenUp(Notifier):
        down = True

        @activity.defn(name="notify_merchant")
        async def notify(self, notification: NotificationInput) -> NotificationResult:
            self.sent.append(notification)
            if self.down:
                raise ApplicationError("merchant endpoint answered 503", type="notification_failed")
            return NotificationResult(delivered=True, status_code=200)

    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_n")]
    )
    notifier = DownThenUp()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start()
        async with asyncio.timeout(30):
            while len(notifier.sent) < 5:
                await time_skipping_env.sleep(30)
        notifier.down = False
        await asyncio.sleep(0.5)  # the failure is recorded before the re-drive window opens
        view = await handle.execute_update(
            PaymentWorkflow.retry_notification,
            RetryNotification(operator="ana", reason="merchant fixed their endpoint"),
        )
        result = await handle.result()

    assert view.status is PaymentStatus.SUCCEEDED
    assert result.status is PaymentStatus.SUCCEEDED
    assert len(notifier.sent) == 6
    with transaction(session_factory(engine)) as session:
        reasons = [e.reason for e in ledger.list_events(session, result.payment_id)]
    assert "retry_notification by ana: merchant fixed their endpoint" in reasons


async def _keeps_waiting(
    handle: WorkflowHandle[PaymentWorkflow, PaymentView], seconds: float = 1.0
) -> None:
    """The payment stays awaiting its webhook for ``seconds`` of real time."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        view = await handle.query(PaymentWorkflow.status)
        assert view.status is PaymentStatus.AWAITING_WEBHOOK, view
        await asyncio.sleep(0.1)


async def test_an_event_from_another_gateway_never_moves_the_charge(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A Stripe event naming the reference of a sandbox charge is ignored: the payment waits, and
    the sandbox's own event (with the same event id) settles it."""
    gateway = ScriptedGateway(charges=[PENDING], lookups=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        forged = replace(event("ch_1", event_id="evt_1"), provider=GatewayName.STRIPE)
        await handle.signal(PaymentWorkflow.gateway_event, forged)
        await _keeps_waiting(handle)
        await handle.signal(
            PaymentWorkflow.gateway_event, event("ch_1", ChargeState.DECLINED, event_id="evt_1")
        )
        result = await asyncio.wait_for(handle.result(), timeout=30)

    assert result.status is PaymentStatus.FAILED
    assert "succeeded" not in ledger_statuses(engine, result.payment_id)


async def test_after_failover_the_first_gateways_events_never_move_the_charge(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """After failing over from the sandbox to Stripe, sandbox events naming the payment (a late
    one for the first attempt, one naming Stripe's reference) are ignored; Stripe's own decides."""
    primary = ScriptedGateway(charges=[GatewayUnavailable("503")])
    secondary = ScriptedGateway(
        gateway_name=GatewayName.STRIPE,
        charges=[ChargeOutcome(state=ChargeState.PENDING, gateway_reference="pi_1")],
        lookups=[PENDING],
    )
    async with running_payments(
        time_skipping_env, session_factory(engine), primary, secondary
    ) as h:
        request = payment_request(route=[GatewayName.SANDBOX, GatewayName.STRIPE])
        handle = await h.start(request)
        while not secondary.charge_calls:
            await time_skipping_env.sleep(timedelta(seconds=10))  # the sandbox's retries
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        for reference in ("ch_first_attempt", "pi_1"):
            late = replace(event(reference), payment_id=request.payment_id)
            await handle.signal(PaymentWorkflow.gateway_event, late)
        await _keeps_waiting(handle)
        declined = replace(
            event("pi_1", ChargeState.DECLINED, event_id="evt_1"), provider=GatewayName.STRIPE
        )
        await handle.signal(PaymentWorkflow.gateway_event, declined)
        result = await asyncio.wait_for(handle.result(), timeout=30)

    assert result.status is PaymentStatus.FAILED
    assert result.gateway is GatewayName.STRIPE
    assert "succeeded" not in ledger_statuses(engine, result.payment_id)


async def test_an_early_event_from_another_gateway_never_moves_the_charge(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A Stripe event naming the reference before the sandbox's charge call answered is ignored
    too, once the reference is known to be the sandbox's; its event id does not make the sandbox's
    own event with that id a duplicate."""
    hold = asyncio.Event()
    gateway = ScriptedGateway(charges=[PENDING], lookups=[PENDING], hold_charge=hold)
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        await asyncio.wait_for(gateway.charge_started.wait(), timeout=10)
        forged = replace(event("ch_1", event_id="evt_1"), provider=GatewayName.STRIPE)
        await handle.signal(PaymentWorkflow.gateway_event, forged)
        hold.set()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await _keeps_waiting(handle)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1", event_id="evt_1"))
        result = await asyncio.wait_for(handle.result(), timeout=30)

    assert result.status is PaymentStatus.SUCCEEDED
