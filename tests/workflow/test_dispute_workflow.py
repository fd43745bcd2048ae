"""DisputeWorkflow on the time-skipping Temporal server, with the real ledger on SQLite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ledger import payments
from ledger.engine import SessionFactory, create_ledger_engine, session_factory, transaction
from ledger.models import DisputeRecord
from tests.support.ledger_seed import seed_succeeded_payment
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.refund_harness import RefundHarness, running_refunds
from workflows.contract import (
    ChargeState,
    DisputeNotice,
    DisputeState,
    GatewayEvent,
    GatewayName,
    PaymentRequest,
)
from workflows.dispute import DisputeWorkflow
from workflows.dispute_contract import DisputeInput, DisputeSettings, DisputeView

SETTINGS = DisputeSettings(reminder_before_seconds=2 * 24 * 3600)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return session_factory(engine)


def dispute_event(
    payment: PaymentRequest,
    reference: str,
    state: DisputeState,
    *,
    due: str | None = None,
    event_id: str | None = None,
) -> GatewayEvent:
    return GatewayEvent(
        provider=GatewayName.SANDBOX,
        event_id=event_id or f"evt_{uuid.uuid4().hex[:12]}",
        event_type="dispute.created" if state is DisputeState.NEEDS_RESPONSE else "dispute.closed",
        state=ChargeState.SUCCEEDED,
        payment_id=payment.payment_id,
        dispute=DisputeNotice(
            dispute_reference=reference,
            state=state,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            reason="fraudulent",
            evidence_due_by=due,
        ),
    )


async def deliver(
    h: RefundHarness, event: GatewayEvent
) -> WorkflowHandle[DisputeWorkflow, DisputeView | None]:
    """What the API does with a dispute webhook: signal-with-start, keyed by the dispute id."""
    assert event.dispute is not None
    reference = event.dispute.dispute_reference
    return await h.env.client.start_workflow(
        DisputeWorkflow.run,
        DisputeInput(
            dispute_id=f"dp_{reference}",
            provider=event.provider,
            dispute_reference=reference,
            settings=SETTINGS,
        ),
        id=f"dispute:{event.provider.value}:{reference}",
        task_queue=h.task_queue,
        start_signal="dispute_event",
        start_signal_args=[event],
    )


def payment_status(sessions: SessionFactory, payment_id: str) -> str:
    with transaction(sessions) as session:
        row = payments.get_payment(session, "merchant_test", payment_id)
        assert row is not None
        return row.status


def dispute_rows(sessions: SessionFactory, reference: str) -> list[DisputeRecord]:
    with transaction(sessions) as session:
        query = select(DisputeRecord).where(DisputeRecord.dispute_reference == reference)
        return list(session.exec(query))


async def until(check: object, within: float = 20) -> None:
    assert callable(check)
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


async def test_dispute_opened_reminded_then_won(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """Opened: payment disputed, merchant and operators told; two days before the evidence is
    due the merchant is reminded; won: the payment is succeeded again, everyone told."""
    payment = seed_succeeded_payment(sessions)
    reference = f"dp_{uuid.uuid4().hex[:10]}"
    due = (await time_skipping_env.get_current_time() + timedelta(days=5)).isoformat()
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        handle = await deliver(
            h, dispute_event(payment, reference, DisputeState.NEEDS_RESPONSE, due=due)
        )
        await until(lambda: [n.event_type for n in h.notifier.disputes] == ["dispute.created"])
        assert payment_status(sessions, payment.payment_id) == "disputed"
        assert h.notifier.disputes[0].dispute.payment_id == payment.payment_id
        await asyncio.sleep(0.3)
        assert len(h.notifier.disputes) == 1  # no reminder before its time

        await time_skipping_env.sleep(timedelta(days=3, hours=1))
        await until(lambda: len(h.notifier.disputes) == 2)
        await deliver(h, dispute_event(payment, reference, DisputeState.WON))
        view = await handle.result()

    assert view is not None and view.status is DisputeState.WON
    assert [n.event_type for n in h.notifier.disputes] == [
        "dispute.created",
        "dispute.evidence_reminder",
        "dispute.won",
    ]
    assert [a.event_type for a in h.notifier.alerts] == ["dispute.created", "dispute.won"]
    assert payment_status(sessions, payment.payment_id) == "succeeded"
    [row] = dispute_rows(sessions, reference)
    assert (row.status, row.reason, row.amount_minor) == ("won", "fraudulent", 2500)
    assert row.evidence_due_by is not None


async def test_dispute_lost_leaves_the_payment_dispute_lost(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """Opened then lost: the dispute closes lost and the payment is dispute_lost."""
    payment = seed_succeeded_payment(sessions)
    reference = f"dp_{uuid.uuid4().hex[:10]}"
    due = (await time_skipping_env.get_current_time() + timedelta(days=7)).isoformat()
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        handle = await deliver(
            h, dispute_event(payment, reference, DisputeState.NEEDS_RESPONSE, due=due)
        )
        await until(lambda: len(h.notifier.disputes) == 1)
        await deliver(h, dispute_event(payment, reference, DisputeState.LOST))
        view = await handle.result()

    assert view is not None and view.status is DisputeState.LOST
    assert payment_status(sessions, payment.payment_id) == "dispute_lost"
    assert [n.event_type for n in h.notifier.disputes] == ["dispute.created", "dispute.lost"]
    assert [row.status for row in dispute_rows(sessions, reference)] == ["lost"]


async def test_duplicate_dispute_webhooks_make_one_workflow_and_one_dispute(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """The same created webhook three times (one re-sent with a new event id): one run, one
    ledger row, one merchant notice."""
    payment = seed_succeeded_payment(sessions)
    reference = f"dp_{uuid.uuid4().hex[:10]}"
    due = (await time_skipping_env.get_current_time() + timedelta(days=7)).isoformat()
    opened = dispute_event(payment, reference, DisputeState.NEEDS_RESPONSE, due=due)
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        handles = [
            await deliver(h, opened),
            await deliver(h, opened),
            await deliver(
                h,
                dispute_event(
                    payment, reference, DisputeState.NEEDS_RESPONSE, due=due, event_id="evt_other"
                ),
            ),
        ]
        await until(lambda: len(h.notifier.disputes) >= 1)
        await deliver(h, dispute_event(payment, reference, DisputeState.WON))
        await handles[0].result()

    assert all(handle.result_run_id for handle in handles)
    assert len({handle.result_run_id for handle in handles}) == 1
    assert [n.event_type for n in h.notifier.disputes] == ["dispute.created", "dispute.won"]
    assert len(dispute_rows(sessions, reference)) == 1


async def test_no_reminder_for_evidence_already_due(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """A dispute whose evidence was due before it reached us gets no reminder, only its outcome."""
    payment = seed_succeeded_payment(sessions)
    reference = f"dp_{uuid.uuid4().hex[:10]}"
    due = (await time_skipping_env.get_current_time() - timedelta(hours=1)).isoformat()
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        handle = await deliver(
            h, dispute_event(payment, reference, DisputeState.NEEDS_RESPONSE, due=due)
        )
        await until(lambda: len(h.notifier.disputes) == 1)
        await time_skipping_env.sleep(timedelta(days=2))
        await deliver(h, dispute_event(payment, reference, DisputeState.WON))
        await handle.result()

    assert [n.event_type for n in h.notifier.disputes] == ["dispute.created", "dispute.won"]


async def test_a_dispute_attaches_only_to_a_payment_of_its_own_gateway(
    time_skipping_env: WorkflowEnvironment, sessions: SessionFactory
) -> None:
    """A sandbox dispute naming a Stripe payment's id opens unattached: the payment stays
    succeeded and the dispute names no payment or merchant."""
    payment = seed_succeeded_payment(sessions, gateway=GatewayName.STRIPE)
    reference = f"dp_{uuid.uuid4().hex[:10]}"
    async with running_refunds(time_skipping_env, sessions, ScriptedGateway()) as h:
        handle = await deliver(h, dispute_event(payment, reference, DisputeState.NEEDS_RESPONSE))
        await until(lambda: [n.event_type for n in h.notifier.disputes] == ["dispute.created"])
        # An open dispute's timers would fire into the next tests on the shared test server.
        await handle.terminate()

    assert payment_status(sessions, payment.payment_id) == "succeeded"
    (row,) = dispute_rows(sessions, reference)
    assert (row.payment_id, row.merchant_id) == (None, None)
