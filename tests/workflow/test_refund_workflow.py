"""RefundWorkflow on the time-skipping Temporal server, with the real ledger on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import Engine
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from gateways.base import GatewayRequestError, GatewayUnavailable
from ledger import payments, refunds
from ledger.engine import SessionFactory, create_ledger_engine, session_factory, transaction
from tests.support.ledger_seed import seed_succeeded_payment
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.refund_harness import refund_event, refund_input, running_refunds
from workflows.contract import Failure, GatewayName, PaymentStatus, RefundOutcome, RefundState
from workflows.refund import RefundWorkflow
from workflows.refund_contract import RefundInitiate


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return session_factory(engine)


def payment_status(sessions: SessionFactory, payment_id: str) -> str:
    with transaction(sessions) as session:
        row = payments.get_payment(session, "merchant_test", payment_id)
        assert row is not None
        return row.status


def refund_rows(sessions: SessionFactory, payment_id: str) -> list[tuple[str, int]]:
    with transaction(sessions) as session:
        return [(r.status, r.amount_minor) for r in refunds.list_for_payment(session, payment_id)]


async def test_full_refund_succeeds_on_its_webhook(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """No amount refunds all of it; the webhook settles it and the payment becomes refunded."""
    payment = seed_succeeded_payment(sessions, gateway_reference="ch_full")
    gateway = ScriptedGateway()
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        refund = refund_input(payment)
        handle = await h.start(refund)
        accepted = await handle.execute_update(
            RefundWorkflow.initiate, RefundInitiate(fingerprint=refund.request.fingerprint)
        )
        assert accepted.refund.status is RefundState.PENDING
        assert accepted.refund.amount_minor == 2500
        await h.wait_for_refund_call()
        await handle.signal(RefundWorkflow.refund_event, refund_event("re_1"))
        result = await handle.result()

    assert result.refund is not None
    assert result.refund.status is RefundState.SUCCEEDED
    assert result.refund.refund_reference == "re_1"
    [call] = gateway.refund_calls
    assert call.gateway_reference == "ch_full"
    assert call.amount_minor == 2500
    assert call.refund_id == refund.request.refund_id
    assert call.idempotency_key == f"{handle.id}/refund"
    assert payment_status(sessions, payment.payment_id) == PaymentStatus.REFUNDED.value
    assert refund_rows(sessions, payment.payment_id) == [("succeeded", 2500)]
    assert h.notifier.refunds == [
        ("refund.succeeded", refund.request.refund_id, RefundState.SUCCEEDED)
    ]


async def test_partial_refunds_up_to_the_total_then_nothing_is_left(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """1000 then 1500 of 2500: partially_refunded, then refunded; one more minor unit is refused."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway(
        refunds=[
            RefundOutcome(state=RefundState.SUCCEEDED, refund_reference="re_a"),
            RefundOutcome(state=RefundState.SUCCEEDED, refund_reference="re_b"),
        ]
    )
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        first = await (await h.start(refund_input(payment, 1000))).result()
        assert payment_status(sessions, payment.payment_id) == "partially_refunded"
        second = await (await h.start(refund_input(payment, 1500))).result()
        assert payment_status(sessions, payment.payment_id) == "refunded"
        third = await (await h.start(refund_input(payment, 1))).result()

    assert first.refund is not None and first.refund.status is RefundState.SUCCEEDED
    assert second.refund is not None and second.refund.status is RefundState.SUCCEEDED
    assert third.refund is None
    assert third.refusal is not None and third.refusal.code == "refund_exceeds_refundable"
    assert len(gateway.refund_calls) == 2
    assert refund_rows(sessions, payment.payment_id) == [("succeeded", 1000), ("succeeded", 1500)]


async def test_over_refund_is_refused_through_initiate_and_reaches_no_gateway(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """3000 of a 2500 payment: initiate fails with refund_exceeds_refundable and the refundable."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway()
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        refund = refund_input(payment, 3000)
        handle = await h.start(refund)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(
                RefundWorkflow.initiate, RefundInitiate(fingerprint=refund.request.fingerprint)
            )
        result = await handle.result()

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "refund_exceeds_refundable"
    assert cause.details == (2500,)
    assert result.refusal is not None and result.refusal.code == "refund_exceeds_refundable"
    assert gateway.refund_calls == []
    assert refund_rows(sessions, payment.payment_id) == []
    assert payment_status(sessions, payment.payment_id) == "succeeded"


async def test_concurrent_refunds_that_together_exceed_it_one_wins(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """Two 2000 refunds of 2500 started together: exactly one is reserved, the other refused."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway()
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        inputs = [refund_input(payment, 2000), refund_input(payment, 2000)]
        handles = await asyncio.gather(*(h.start(refund) for refund in inputs))
        answers = await asyncio.gather(
            *(
                handle.execute_update(
                    RefundWorkflow.initiate, RefundInitiate(fingerprint=refund.request.fingerprint)
                )
                for handle, refund in zip(handles, inputs, strict=True)
            ),
            return_exceptions=True,
        )
        refused = [a for a in answers if isinstance(a, WorkflowUpdateFailedError)]
        accepted = [a for a in answers if not isinstance(a, BaseException)]
        assert len(refused) == 1 and len(accepted) == 1, answers
        winner = handles[answers.index(accepted[0])]
        loser = handles[1 - answers.index(accepted[0])]
        await h.wait_for_refund_call()
        await winner.signal(RefundWorkflow.refund_event, refund_event("re_1"))
        lost = await loser.result()
        won = await winner.result()

    assert lost.refusal is not None and lost.refundable_minor == 500
    assert won.refund is not None and won.refund.status is RefundState.SUCCEEDED

    cause = refused[0].cause
    assert isinstance(cause, ApplicationError) and cause.type == "refund_exceeds_refundable"
    assert len(gateway.refund_calls) == 1
    assert refund_rows(sessions, payment.payment_id) == [("succeeded", 2000)]
    assert payment_status(sessions, payment.payment_id) == "partially_refunded"


async def test_initiate_again_replays_and_another_body_is_refused(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """The same fingerprint gets the same refund; another one gets idempotency_key_reused."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway()
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        refund = refund_input(payment, 700)
        handle = await h.start(refund)
        initiate = RefundInitiate(fingerprint=refund.request.fingerprint)
        first = await handle.execute_update(RefundWorkflow.initiate, initiate)
        again = await handle.execute_update(RefundWorkflow.initiate, initiate)
        with pytest.raises(WorkflowUpdateFailedError) as reused:
            await handle.execute_update(
                RefundWorkflow.initiate, RefundInitiate(fingerprint="another-body")
            )
        await h.wait_for_refund_call()
        await handle.signal(RefundWorkflow.refund_event, refund_event("re_1"))
        await handle.result()

    assert first.refund.refund_id == again.refund.refund_id == refund.request.refund_id
    cause = reused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "idempotency_key_reused"
    assert len(gateway.refund_calls) == 1
    assert refund_rows(sessions, payment.payment_id) == [("succeeded", 700)]


async def test_gateway_decline_is_recorded_with_its_reason_and_frees_the_amount(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """refund.failed: the refund is failed with the gateway's reason; the payment stays succeeded
    and the whole amount can be refunded again."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway(
        refunds=[
            RefundOutcome(state=RefundState.PENDING, refund_reference="re_1"),
            RefundOutcome(state=RefundState.SUCCEEDED, refund_reference="re_2"),
        ]
    )
    declined = Failure(code="refund_declined", message="The card issuer refused the refund.")
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        handle = await h.start(refund_input(payment))
        await h.wait_for_refund_call()
        await handle.signal(
            RefundWorkflow.refund_event, refund_event("re_1", RefundState.FAILED, failure=declined)
        )
        result = await handle.result()
        retry = await (await h.start(refund_input(payment))).result()

    assert result.refund is not None and result.refund.status is RefundState.FAILED
    assert result.refund.failure == Failure(code="refund_declined", message=declined.message)
    assert ("refund.failed", result.refund.refund_id, RefundState.FAILED) in h.notifier.refunds
    assert retry.refund is not None and retry.refund.amount_minor == 2500
    assert refund_rows(sessions, payment.payment_id)[0] == ("failed", 2500)


async def test_no_webhook_is_reconciled_at_the_deadline(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """Without a webhook the workflow asks the gateway at each deadline until it says final."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway(
        refund_lookups=[
            RefundOutcome(state=RefundState.PENDING, refund_reference="re_1"),
            RefundOutcome(state=RefundState.SUCCEEDED, refund_reference="re_1"),
        ]
    )
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        result = await (await h.start(refund_input(payment, 900))).result()

    assert result.refund is not None and result.refund.status is RefundState.SUCCEEDED
    assert [lookup.refund_reference for lookup in gateway.refund_lookup_calls] == ["re_1", "re_1"]
    assert payment_status(sessions, payment.payment_id) == "partially_refunded"


async def test_transient_errors_are_retried_with_the_same_key(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """Two 503s, then an answer: three calls, one idempotency key, one refund."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway(
        refunds=[
            GatewayUnavailable("503"),
            GatewayUnavailable("503"),
            RefundOutcome(state=RefundState.SUCCEEDED, refund_reference="re_9"),
        ]
    )
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        result = await (await h.start(refund_input(payment, 500))).result()

    assert result.refund is not None and result.refund.status is RefundState.SUCCEEDED
    assert len(gateway.refund_calls) == 3
    assert len({call.idempotency_key for call in gateway.refund_calls}) == 1


async def test_a_request_the_gateway_rejects_is_failed_not_retried(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """A non-retryable gateway error ends the refund failed at once and frees the amount."""
    payment = seed_succeeded_payment(sessions)
    gateway = ScriptedGateway(refunds=[GatewayRequestError("400 bad currency")])
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        result = await (await h.start(refund_input(payment))).result()

    assert result.refund is not None and result.refund.status is RefundState.FAILED
    assert result.refund.failure is not None
    assert result.refund.failure.code == "gateway_rejected_request"
    assert len(gateway.refund_calls) == 1
    assert payment_status(sessions, payment.payment_id) == "succeeded"


async def test_a_refund_of_an_unsettled_payment_is_refused(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """A payment that has not succeeded cannot be refunded: payment_not_refundable."""
    payment = seed_succeeded_payment(sessions)
    with transaction(sessions) as session:
        row = payments.get_payment(session, "merchant_test", payment.payment_id)
        assert row is not None
        row.status = PaymentStatus.AUTHORIZED.value
        session.add(row)
    gateway = ScriptedGateway()
    async with running_refunds(time_skipping_env, sessions, gateway) as h:
        result = await (await h.start(refund_input(payment))).result()

    assert result.refusal is not None and result.refusal.code == "payment_not_refundable"
    assert gateway.refund_calls == []


async def test_an_event_from_another_gateway_never_settles_the_refund(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """A Stripe refund.failed naming a sandbox refund (its id and reference) is ignored; the
    sandbox's own event, with the same event id, settles it."""
    payment = seed_succeeded_payment(sessions)
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        refund = refund_input(payment)
        handle = await h.start(refund)
        await handle.execute_update(
            RefundWorkflow.initiate, RefundInitiate(fingerprint=refund.request.fingerprint)
        )
        await h.wait_for_refund_call()
        named = refund_event(
            "re_1", RefundState.FAILED, refund_id=refund.request.refund_id, event_id="evt_1"
        )
        await handle.signal(
            RefundWorkflow.refund_event, replace(named, provider=GatewayName.STRIPE)
        )
        await handle.signal(RefundWorkflow.refund_event, refund_event("re_1", event_id="evt_1"))
        result = await asyncio.wait_for(handle.result(), timeout=30)

    assert result.refund is not None
    assert result.refund.status is RefundState.SUCCEEDED
