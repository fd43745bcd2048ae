"""Escalations on the time-skipping server: needs_attention and conflicted alert the operators and
tell the merchant's endpoints; a ledger write that can never succeed ends the payment visibly,
alerted and counted, instead of retrying for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, exc
from sqlmodel import Session
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotificationActivities
from gateways.base import GatewayRequestError
from ledger import payments as ledger
from ledger.engine import SessionFactory, create_ledger_engine, session_factory
from ledger.models import Payment
from paytide import search_attributes as sa
from paytide.metrics import WorkerMetrics
from tests.support.scripted_gateway import ScriptedGateway
from tests.support.serve import serve
from tests.support.webhook_recorder import WebhookRecorder
from tests.workflow.harness import Notifier, event, payment_request, running_payments
from workflows.contract import (
    CaptureMethod,
    CapturePayment,
    ChargeOutcome,
    ChargeState,
    InitiateRequest,
    NotificationResult,
    OperatorAlert,
    PaymentStatus,
)
from workflows.events import EventType
from workflows.payment import PaymentWorkflow

PENDING = ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_1")
NUL_REFUSED = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
OPS_SECRET = "whsec_ops_workflow_escalation"
# Longer than the harness's maximum webhook wait (600 s).
PAST_MAX_WAIT = timedelta(seconds=700)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


@dataclass
class CountingAlerts(Notifier):
    """The fake notifier, except that operator alerts run the real activity (no alert URL), so
    its counters are the worker's."""

    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    # Where the real activity posts its alerts, if anywhere.
    ops_url: str | None = None

    @activity.defn(name="alert_operators")
    async def alert(self, alert: OperatorAlert) -> NotificationResult:
        self.alerts.append(alert)
        async with httpx.AsyncClient() as client:
            real = NotificationActivities(
                client,
                _no_sessions,
                callback_url=None,
                signing_secret=None,
                ops_url=self.ops_url,
                ops_secret=OPS_SECRET if self.ops_url else None,
                metrics=self.metrics,
            )
            return await real.alert_operators(alert)


def _no_sessions() -> Session:
    raise AssertionError("an escalation alert must not need the ledger")


class FailingAlerts(Notifier):
    """An operators' channel that never takes an alert."""

    @activity.defn(name="alert_operators")
    async def alert(self, alert: OperatorAlert) -> NotificationResult:
        self.alerts.append(alert)
        raise ApplicationError("ops endpoint answered 500", type="alert_failed")


class RefusingLedger:
    """The real ledger, until it has opened ``works_for`` transactions: then every transaction
    fails as PostgreSQL fails a text with a NUL byte in it."""

    def __init__(self, sessions: SessionFactory, works_for: int) -> None:
        self._sessions = sessions
        self._left = works_for

    def __call__(self) -> Session:
        if self._left <= 0:
            raise exc.DataError(
                "INSERT INTO payments ... (secret parameters)",
                {"description": "a\x00b"},
                psycopg.DataError(NUL_REFUSED),
            )
        self._left -= 1
        return self._sessions()


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_needs_attention_alerts_operators_and_tells_the_endpoints(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A payment escalated to needs_attention sends one operator alert (with its reason, counted)
    and a payment.needs_attention event to the merchant's endpoints; the late webhook settles it."""
    gateway = ScriptedGateway(charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING)])
    notifier = CountingAlerts()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start()
        result = asyncio.create_task(handle.result())
        await asyncio.wait({result}, timeout=3)  # time skips past the maximum wait
        await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        view = await result

    assert view.status is PaymentStatus.SUCCEEDED
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_NEEDS_ATTENTION]
    alert = notifier.alerts[0]
    assert alert.payment.status is PaymentStatus.NEEDS_ATTENTION
    assert alert.reason == "no final answer from the gateway within the maximum wait"
    assert alert.unrecoverable_step is None
    assert [n.event_type for n in notifier.emitted] == [EventType.PAYMENT_NEEDS_ATTENTION]
    assert notifier.emitted[0].payment.status is PaymentStatus.NEEDS_ATTENTION
    registry = notifier.metrics.registry
    assert count(registry, "paytide_operator_alerts_total", kind="payment.needs_attention") == 1


async def test_conflicted_alerts_operators_and_notifies_the_merchant(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A conflicted payment alerts the operators with the mismatch, and the merchant's
    notification (callback and endpoints) is payment.conflicted."""
    gateway = ScriptedGateway(charges=[PENDING])
    notifier = CountingAlerts()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1", amount=9999))
        view = await asyncio.wait_for(handle.result(), timeout=20)

    assert view.status is PaymentStatus.CONFLICTED
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_CONFLICTED]
    assert notifier.alerts[0].reason == "gateway reported 9999 EUR, payment is 2500 EUR"
    assert [n.event_type for n in notifier.sent] == [EventType.PAYMENT_CONFLICTED]
    registry = notifier.metrics.registry
    assert count(registry, "paytide_operator_alerts_total", kind="payment.conflicted") == 1


async def test_a_capture_beyond_the_authorization_alerts_operators(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A manual capture the gateway says took more than was authorized ends conflicted like a
    charge's mismatch does: one operator alert with the mismatch, counted, and the merchant's
    notification is payment.conflicted."""
    gateway = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.AUTHORIZED, gateway_reference="ch_m")],
        capture_outcome=ChargeOutcome(
            state=ChargeState.SUCCEEDED, gateway_reference="ch_m", amount_captured=3000
        ),
    )
    notifier = CountingAlerts()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start(payment_request(capture=CaptureMethod.MANUAL))
        await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
        await handle.execute_update(PaymentWorkflow.capture, CapturePayment(amount_minor=None))
        view = await asyncio.wait_for(handle.result(), timeout=20)

    assert view.status is PaymentStatus.CONFLICTED
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_CONFLICTED]
    assert notifier.alerts[0].reason == (
        "gateway reported 3000 EUR captured, the authorization is 2500 EUR"
    )
    assert [n.event_type for n in notifier.sent][-1] == EventType.PAYMENT_CONFLICTED
    registry = notifier.metrics.registry
    assert count(registry, "paytide_operator_alerts_total", kind="payment.conflicted") == 1


async def test_each_time_a_payment_needs_attention_is_a_new_alert(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A payment that needs attention twice (no answer to its authorization, later none to its
    capture) alerts the operators twice under two event ids, so a receiver that dedupes on the
    id (as docs/webhooks.md asks) does not drop the second escalation as a re-delivery."""
    gateway = ScriptedGateway(
        charges=[PENDING],
        lookups=[ChargeOutcome(state=ChargeState.PENDING)],
        capture_outcome=ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_1"),
    )
    ops = WebhookRecorder()
    async with serve(ops.app) as ops_base:
        notifier = CountingAlerts(ops_url=f"{ops_base}/webhooks")
        async with running_payments(
            time_skipping_env, session_factory(engine), gateway, notifier=notifier
        ) as h:
            handle = await h.start(payment_request(capture=CaptureMethod.MANUAL))
            await time_skipping_env.sleep(PAST_MAX_WAIT)
            await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
            await handle.signal(
                PaymentWorkflow.gateway_event, event("ch_1", ChargeState.AUTHORIZED)
            )
            await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
            await handle.start_update(
                PaymentWorkflow.capture,
                CapturePayment(amount_minor=None),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            await time_skipping_env.sleep(PAST_MAX_WAIT)  # the capture is never confirmed
            await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
            await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
            view = await asyncio.wait_for(handle.result(), timeout=20)

    assert view.status is PaymentStatus.SUCCEEDED
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_NEEDS_ATTENTION] * 2
    sent = [webhook.json() for webhook in ops.delivered]
    assert [body["type"] for body in sent] == ["payment.needs_attention"] * 2
    assert [body["data"]["reason"] for body in sent] == [
        "no final answer from the gateway within the maximum wait",
        "the gateway never confirmed the capture or void",
    ]
    assert len({body["id"] for body in sent}) == 2, sent


async def test_a_failing_alert_changes_no_outcome(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """An operators' channel that refuses every alert: the escalated payment still waits, still
    tells its endpoints, and the gateway's late word still settles it."""
    gateway = ScriptedGateway(charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING)])
    notifier = FailingAlerts()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start()
        result = asyncio.create_task(handle.result())
        await asyncio.wait({result}, timeout=3)
        await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        async with asyncio.timeout(20):
            while not notifier.emitted:
                await asyncio.sleep(0.05)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        view = await result

    assert view.status is PaymentStatus.SUCCEEDED
    assert len(notifier.alerts) == 5  # NOTIFY_RETRY's attempts, then given up
    assert [n.event_type for n in notifier.emitted] == [EventType.PAYMENT_NEEDS_ATTENTION]


async def test_a_failing_alert_does_not_hold_the_payment(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """While the operators' channel refuses the needs_attention alert (its retries and their
    backoff), the gateway's late word still settles the payment at once: the alert runs beside
    the payment, not in front of it."""
    gateway = ScriptedGateway(charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING)])
    notifier = FailingAlerts()
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, notifier=notifier
    ) as h:
        handle = await h.start()
        # Escalated at the maximum wait (600 s); the signal comes 5 s later, mid-retries.
        await time_skipping_env.sleep(timedelta(seconds=605))
        await h.wait_for_status(handle, PaymentStatus.NEEDS_ATTENTION)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        view = await asyncio.wait_for(handle.result(), timeout=20)

    assert view.status is PaymentStatus.SUCCEEDED
    assert len(notifier.alerts) == 5  # still tried as often
    with Session(engine) as session:
        at = {e.status: e.created_at for e in ledger.list_events(session, view.payment_id)}
    # Held by the alert, it would settle only after NOTIFY_RETRY's backoff (1 + 2 + 4 + 8 s).
    assert at["succeeded"] - at["needs_attention"] < timedelta(seconds=10)


async def test_admission_the_ledger_refuses_fails_the_workflow_at_once(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A ledger that refuses the admission for good (DataError) is not retried: the waiting
    initiate update and the workflow fail with payment_not_admitted, the operators are alerted,
    and it is counted."""
    gateway = ScriptedGateway(charges=[PENDING])
    notifier = CountingAlerts()
    ledger = RefusingLedger(session_factory(engine), works_for=0)
    async with running_payments(time_skipping_env, ledger, gateway, notifier=notifier) as h:
        request = payment_request()
        handle = await h.start(request)
        with pytest.raises(WorkflowUpdateFailedError) as update:
            await asyncio.wait_for(
                handle.execute_update(
                    PaymentWorkflow.initiate, InitiateRequest(fingerprint=request.fingerprint)
                ),
                timeout=20,
            )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=20)

    for cause in (update.value.cause, failed.value.cause):
        assert isinstance(cause, ApplicationError) and cause.type == "payment_not_admitted"
        assert NUL_REFUSED in cause.message and "nothing was charged" in cause.message
        assert "secret parameters" not in cause.message
    assert gateway.charge_calls == []
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_NOT_ADMITTED]
    assert notifier.alerts[0].unrecoverable_step == "admission"
    registry = notifier.metrics.registry
    assert count(registry, "paytide_payments_ended_unrecoverable_total", step="admission") == 1


async def test_a_later_ledger_write_refused_ends_in_needs_attention(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Admitted, charged, then the ledger refuses every write for good: the charge is not taken
    for a gateway refusal; the payment stops in needs_attention (search attribute), alerted,
    counted and told to the endpoints, and the workflow fails naming the write."""
    gateway = ScriptedGateway(charges=[PENDING])
    notifier = CountingAlerts()
    ledger = RefusingLedger(session_factory(engine), works_for=1)  # the admission only
    async with running_payments(time_skipping_env, ledger, gateway, notifier=notifier) as h:
        handle = await h.start()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=20)
        described = await handle.describe()

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ledger_write_failed"
    assert "ledger: awaiting_webhook" in cause.message and NUL_REFUSED in cause.message
    assert described.typed_search_attributes.get(sa.PAYMENT_STATUS) == "needs_attention"
    assert len(gateway.charge_calls) == 1
    assert [a.kind for a in notifier.alerts] == [EventType.PAYMENT_NEEDS_ATTENTION]
    assert notifier.alerts[0].unrecoverable_step == "ledger"
    assert [n.event_type for n in notifier.emitted] == [EventType.PAYMENT_NEEDS_ATTENTION]
    registry = notifier.metrics.registry
    assert count(registry, "paytide_payments_ended_unrecoverable_total", step="ledger") == 1


async def test_a_refusal_longer_than_the_ledger_column_still_fails_the_payment(
    time_skipping_env: WorkflowEnvironment, database_url: str
) -> None:
    """A gateway that refuses the charge with a 5,000-character message (a proxy's HTML page)
    fails the payment as usual: the ledger keeps the message's first 1,000 characters instead
    of PostgreSQL refusing the write and the payment stopping in needs_attention."""
    gateway = ScriptedGateway(charges=[GatewayRequestError("<html>" + "x" * 5000)])
    engine = create_ledger_engine(database_url)
    try:
        async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
            view = await asyncio.wait_for((await h.start()).result(), timeout=20)
        with Session(engine) as session:
            row = session.get(Payment, view.payment_id)
            assert row is not None
            status, message = row.status, row.failure_message
    finally:
        engine.dispose()

    assert view.status is PaymentStatus.FAILED
    assert status == "failed"
    assert message is not None and len(message) == 1000
    assert message.startswith("GatewayRequestError: <html>xxx")
