"""What a lookup's `not_found` decides for a payment whose charge outcome is unknown: only a
conclusive one proves that nothing was charged, and then it settles the payment even after it
was escalated to operators (docs/operations.md, `needs_attention`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from gateways.base import GatewayUnavailable
from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.harness import running_payments
from workflows.contract import ChargeOutcome, ChargeState, PaymentStatus


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(sqlite_url)
    yield engine
    engine.dispose()


def ledger_statuses(engine: Engine, payment_id: str) -> list[str]:
    with transaction(session_factory(engine)) as session:
        return [row.status for row in ledger.list_events(session, payment_id)]


async def test_a_conclusive_not_found_settles_a_payment_in_needs_attention(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Charge and first lookup both unreachable: needs_attention. The next reconcile's
    conclusive not_found proves nothing was charged: failed (gateway_unavailable), never
    charged again."""
    unreachable = GatewayUnavailable("connection reset")
    gateway = ScriptedGateway(
        charges=[unreachable],
        lookups=[*[unreachable] * 6, ChargeOutcome(state=ChargeState.NOT_FOUND)],
    )
    async with running_payments(time_skipping_env, session_factory(engine), gateway) as h:
        result = await (await h.start()).result()

    assert result.status is PaymentStatus.FAILED
    assert result.failure is not None and result.failure.code == "gateway_unavailable"
    assert ledger_statuses(engine, result.payment_id)[-2:] == ["needs_attention", "failed"]
    assert {call.idempotency_key for call in gateway.charge_calls} == {
        f"{result.workflow_id}/charge/1"
    }
