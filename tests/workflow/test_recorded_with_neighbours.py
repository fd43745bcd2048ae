"""`charging` written with the admission and the waiting status by the charge activity
(RECORD_WITH_NEIGHBOURS, decision 38): the ledger loses nothing and reuses no sequence number."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from activities.ledger import LedgerActivities
from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.harness import event, payment_request, running_payments
from workflows.contract import (
    ChargeOutcome,
    ChargeState,
    InitiateRequest,
    PaymentStatus,
    ReviewDecision,
    ReviewVerdict,
    Transition,
)
from workflows.payment import RECORD_WITH_NEIGHBOURS, PaymentWorkflow

PENDING = ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_1")
SUCCEEDED = ChargeOutcome(
    state=ChargeState.SUCCEEDED, gateway_reference="ch_1", amount_minor=2500, currency="EUR"
)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


def ledger_events(engine: Engine, payment_id: str) -> list[tuple[int, str]]:
    with transaction(session_factory(engine)) as session:
        return [(row.seq, row.status) for row in ledger.list_events(session, payment_id)]


def ledger_row(engine: Engine, payment_id: str) -> tuple[str, int, str | None]:
    with transaction(session_factory(engine)) as session:
        row = session.get(ledger.Payment, payment_id)
        assert row is not None
        return row.status, row.last_seq, row.gateway_reference


async def test_pending_charge_needs_no_local_activity_between_charge_and_answer(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """One local activity before the charge, none after it before the update's answer; the
    ledger still has every status, in order, with contiguous numbers."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        request = payment_request()
        handle = await h.start(request)
        answer = await handle.execute_update(
            PaymentWorkflow.initiate, InitiateRequest(fingerprint=request.fingerprint)
        )
        assert answer.payment.status is PaymentStatus.AWAITING_WEBHOOK
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await handle.result()
        history = await handle.fetch_history()

    assert result.status is PaymentStatus.SUCCEEDED
    assert ledger_events(engine, result.payment_id) == [
        (1, "received"),
        (2, "risk_check"),
        (3, "charging"),
        (4, "awaiting_webhook"),
        (5, "succeeded"),
    ]
    assert ledger_row(engine, result.payment_id) == ("succeeded", 5, "ch_1")

    kinds = [e.event_type for e in history.events]
    charge_scheduled = kinds.index(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    charge_completed = kinds.index(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    answered = kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    markers = [
        (i, e.marker_recorded_event_attributes)
        for i, e in enumerate(history.events)
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    local_activities = [i for i, m in markers if m.marker_name == "core_local_activity"]
    patches = [
        m.details["patch-data"].payloads[0].data
        for _, m in markers
        if m.marker_name == "core_patch"
    ]
    # One patch marker, the newest: it implies the one-step admission, whose own marker (and
    # TemporalChangeVersion upsert) new payments no longer carry.
    assert len(patches) == 1 and RECORD_WITH_NEIGHBOURS.encode() in patches[0]
    assert len([i for i in local_activities if i < charge_scheduled]) == 1  # the admission
    assert not [i for i in local_activities if charge_completed < i < answered]


async def test_a_final_answer_leaves_the_reserved_number_unused(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """A gateway that answers "succeeded" at once: the number reserved for the waiting status
    stays empty and the final status takes the next one."""
    gateway = ScriptedGateway(charges=[SUCCEEDED])
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        handle = await h.start()
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert ledger_events(engine, result.payment_id) == [
        (1, "received"),
        (2, "risk_check"),
        (3, "charging"),
        (5, "succeeded"),
    ]
    assert ledger_row(engine, result.payment_id)[:2] == ("succeeded", 5)


async def test_waiting_written_by_a_try_that_then_failed_never_hides_the_outcome(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """The first try writes `awaiting_webhook` and dies before reporting it; the retry (same
    key) hears "succeeded". The final status must still reach the ledger's row: reusing the
    reserved number would have lost it to the earlier event."""
    sessions = session_factory(engine)
    writes = LedgerActivities(sessions)
    failed_once: list[Transition] = []

    def write_then_die_once(transition: Transition) -> None:
        writes.record_transition(transition)
        if not failed_once:
            failed_once.append(transition)
            raise RuntimeError("worker lost after the ledger write")

    gateway = ScriptedGateway(charges=[PENDING, SUCCEEDED])
    async with running_payments(
        time_skipping_env, sessions, gateway, record=write_then_die_once
    ) as h:
        handle = await h.start()
        result = await handle.result()

    assert [t.status for t in failed_once] == [PaymentStatus.AWAITING_WEBHOOK]
    assert len(gateway.charge_calls) == 2
    assert {c.idempotency_key for c in gateway.charge_calls} == {f"{handle.id}/charge/1"}
    assert result.status is PaymentStatus.SUCCEEDED
    assert ledger_events(engine, result.payment_id) == [
        (1, "received"),
        (2, "risk_check"),
        (3, "charging"),
        (4, "awaiting_webhook"),
        (5, "succeeded"),
    ]
    assert ledger_row(engine, result.payment_id) == ("succeeded", 5, "ch_1")


async def test_a_reviewed_payment_records_charging_itself_after_approval(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Above the review score the admission writes no `charging` (the payment is not going to
    the gateway yet); the approval records it, with the reviewer's words."""
    gateway = ScriptedGateway(charges=[PENDING])
    async with running_payments(
        time_skipping_env, session_factory(engine), gateway, risk_score=75
    ) as h:
        request = payment_request()
        handle = await h.start(request)
        await h.wait_for_status(handle, PaymentStatus.IN_REVIEW)
        assert [s for _, s in ledger_events(engine, request.payment_id)] == [
            "received",
            "risk_check",
            "in_review",
        ]
        approve = ReviewDecision(verdict=ReviewVerdict.APPROVE, reviewer="ana", reason="known")
        await handle.execute_update(PaymentWorkflow.review, approve)
        await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
        await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))
        result = await handle.result()

    assert result.status is PaymentStatus.SUCCEEDED
    assert ledger_events(engine, request.payment_id) == [
        (1, "received"),
        (2, "risk_check"),
        (3, "in_review"),
        (4, "charging"),
        (5, "awaiting_webhook"),
        (6, "succeeded"),
    ]
