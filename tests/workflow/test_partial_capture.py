"""What a payment records as captured: the whole amount with automatic capture, what the gateway
says it captured with manual capture (its capture answer or its webhook), and never more than was
authorized."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.models import Payment
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.harness import event, payment_request, running_payments
from workflows.contract import (
    CancelPayment,
    CaptureMethod,
    CapturePayment,
    ChargeOutcome,
    ChargeState,
    GatewayEvent,
    GatewayName,
    PaymentStatus,
    PaymentView,
)
from workflows.payment import PaymentWorkflow

AUTHORIZED = ChargeOutcome(state=ChargeState.AUTHORIZED, gateway_reference="ch_m")


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


def ledger_captured(engine: Engine, payment_id: str) -> tuple[str, int | None, str | None]:
    """The row's status and amount_captured, and the reason of its last event."""
    with transaction(session_factory(engine)) as session:
        row = session.get(Payment, payment_id)
        assert row is not None
        last = ledger.list_events(session, payment_id)[-1]
        return row.status, row.amount_captured, last.reason


async def capture(
    env: WorkflowEnvironment,
    engine: Engine,
    gateway: ScriptedGateway,
    amount: int | None,
    *,
    webhook: GatewayEvent | None = None,
) -> PaymentView:
    """Authorize 2500 EUR with manual capture, capture ``amount`` and return the final view;
    ``webhook`` is signaled once the capture was sent (a gateway that confirms by webhook)."""
    async with running_payments(env, session_factory(engine), gateway) as h:
        handle = await h.start(payment_request(capture=CaptureMethod.MANUAL))
        await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
        update = await handle.start_update(
            PaymentWorkflow.capture,
            CapturePayment(amount_minor=amount),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        if webhook is not None:
            await handle.signal(PaymentWorkflow.gateway_event, webhook)
        await update.result()
        return await handle.result()


async def test_partial_capture_records_what_was_captured(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Capturing 300 of 2500, confirmed by the gateway: succeeded with amount_captured 300 in
    the view and the ledger; amount stays 2500, and the ledger's event says what was captured."""
    gateway = ScriptedGateway(
        charges=[AUTHORIZED],
        capture_outcome=ChargeOutcome(
            state=ChargeState.SUCCEEDED,
            gateway_reference="ch_m",
            amount_minor=2500,
            currency="EUR",
            amount_captured=300,
        ),
    )

    view = await capture(time_skipping_env, engine, gateway, 300)

    assert (view.status, view.amount_minor, view.amount_captured) == (
        PaymentStatus.SUCCEEDED,
        2500,
        300,
    )
    assert [c.amount_minor for c in gateway.capture_calls] == [300]
    status, captured, reason = ledger_captured(engine, view.payment_id)
    assert (status, captured) == ("succeeded", 300)
    assert reason == "captured 300 of the 2500 authorized (EUR minor units)"


async def test_the_gateway_s_captured_amount_wins_over_the_asked_one(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Asked 500, the gateway says it captured 400: 400 is recorded, not 500."""
    gateway = ScriptedGateway(
        charges=[AUTHORIZED],
        capture_outcome=ChargeOutcome(
            state=ChargeState.SUCCEEDED, gateway_reference="ch_m", amount_captured=400
        ),
    )

    view = await capture(time_skipping_env, engine, gateway, 500)

    assert (view.status, view.amount_captured) == (PaymentStatus.SUCCEEDED, 400)
    assert ledger_captured(engine, view.payment_id)[:2] == ("succeeded", 400)


async def test_a_gateway_that_does_not_say_records_what_was_asked(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A capture answer without a captured amount records the amount asked (the whole amount
    when none was given)."""
    view = await capture(time_skipping_env, engine, ScriptedGateway(charges=[AUTHORIZED]), None)

    assert (view.status, view.amount_captured) == (PaymentStatus.SUCCEEDED, 2500)
    assert ledger_captured(engine, view.payment_id)[:2] == ("succeeded", 2500)


async def test_a_capture_confirmed_by_webhook_records_the_webhook_s_amount(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Adyen's way: 800 asked, the capture is only received (pending); the CAPTURE webhook says
    700 was captured, and 700 is recorded."""
    gateway = ScriptedGateway(
        charges=[AUTHORIZED],
        capture_outcome=ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_m"),
    )
    captured = GatewayEvent(
        provider=GatewayName.SANDBOX,
        event_id="evt_capture",
        event_type="CAPTURE",
        state=ChargeState.SUCCEEDED,
        gateway_reference="ch_m",
        amount_minor=700,
        currency="EUR",
        amount_captured=700,
    )

    view = await capture(time_skipping_env, engine, gateway, 800, webhook=captured)

    assert (view.status, view.amount_captured) == (PaymentStatus.SUCCEEDED, 700)
    assert ledger_captured(engine, view.payment_id)[:2] == ("succeeded", 700)


async def test_a_capture_beyond_the_authorization_is_conflicted(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A gateway that says it captured 3000 of a 2500 authorization is not believed: the payment
    is conflicted (amount_mismatch) with nothing recorded as captured, so nothing is refundable."""
    gateway = ScriptedGateway(
        charges=[AUTHORIZED],
        capture_outcome=ChargeOutcome(
            state=ChargeState.SUCCEEDED, gateway_reference="ch_m", amount_captured=3000
        ),
    )

    view = await capture(time_skipping_env, engine, gateway, None)

    assert view.status is PaymentStatus.CONFLICTED
    assert view.failure is not None and view.failure.code == "amount_mismatch"
    assert view.amount_captured is None
    assert ledger_captured(engine, view.payment_id)[:2] == ("conflicted", None)


async def test_automatic_capture_records_the_whole_amount(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """With automatic capture, the succeeded payment's amount_captured is its amount, whether
    the charge answer or the webhook settled it."""
    instant = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="ch_i")]
    )
    async with running_payments(time_skipping_env, session_factory(engine), instant) as h:
        answered = await (await h.start()).result()
    by_webhook = ScriptedGateway(
        charges=[ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_w")]
    )
    async with running_payments(time_skipping_env, session_factory(engine), by_webhook) as h:
        handle = await h.start()
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_w"))
        signaled = await handle.result()

    for view in (answered, signaled):
        assert (view.status, view.amount_captured) == (PaymentStatus.SUCCEEDED, 2500)
        assert ledger_captured(engine, view.payment_id)[:2] == ("succeeded", 2500)


async def test_a_second_capture_while_one_is_under_way_says_so(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A capture (or a cancel) sent while a capture is under way is refused saying that a
    capture is under way, not that the payment, still authorized, is not authorized."""
    gateway = ScriptedGateway(
        charges=[AUTHORIZED],
        capture_outcome=ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_m"),
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start(payment_request(capture=CaptureMethod.MANUAL))
        await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
        await handle.start_update(
            PaymentWorkflow.capture,
            CapturePayment(amount_minor=300),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        refused = []
        for update, argument in (
            (PaymentWorkflow.capture, CapturePayment(amount_minor=500)),
            (PaymentWorkflow.cancel, CancelPayment(reason="changed my mind")),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update(update, argument)  # type: ignore[arg-type]
            refused.append(str(failed.value.cause))
        await handle.terminate("test over")

    assert "already being captured" in refused[0] and "is authorized" not in refused[0]
    assert "being captured" in refused[1] and "is authorized" not in refused[1]
