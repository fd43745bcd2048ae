"""Record one PaymentWorkflow history per branch into ``tests/histories/<branch>.json``, and one
history each of RefundWorkflow and DisputeWorkflow (``REFUND_AND_DISPUTE``).

Run by hand after a change to ``workflows/payment.py`` that is meant to break replay (or when a
new branch appears)::

    python -m tests.histories.record            # every branch
    python -m tests.histories.record ok cancel  # some of them

Each branch runs on the time-skipping test server with the workflow test harness (scripted
gateway, real ledger activities on a throw-away SQLite file), is checked to end in the status it
is meant to reach, and its history is written with ``WorkflowHistory.to_json()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from gateways.base import GatewayRefused, GatewayUnavailable
from ledger.engine import SessionFactory, create_ledger_engine, session_factory
from ledger.migrate import upgrade
from paytide.binaries import temporal_test_server
from paytide.search_attributes import ALL_KEYS
from tests.support.ledger_seed import seed_succeeded_payment
from tests.support.scripted_gateway import ScriptedGateway
from tests.workflow.harness import Harness, event, payment_request, running_payments
from tests.workflow.refund_harness import refund_event, refund_input, running_refunds
from workflows.contract import (
    CancelPayment,
    CaptureMethod,
    CapturePayment,
    ChargeOutcome,
    ChargeState,
    DisputeNotice,
    DisputeState,
    Failure,
    GatewayEvent,
    GatewayName,
    InitiateRequest,
    NextAction,
    PaymentRequest,
    PaymentStatus,
    PaymentView,
    ReconcileRequest,
    RefundState,
    ReviewDecision,
    ReviewVerdict,
)
from workflows.dispute import DisputeWorkflow
from workflows.dispute_contract import DisputeInput
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.refund_contract import RefundInitiate

HERE = Path(__file__).parent
PENDING = ChargeOutcome(state=ChargeState.PENDING, gateway_reference="ch_1")
SETTLED = ChargeOutcome(
    state=ChargeState.SUCCEEDED, gateway_reference="ch_1", amount_minor=2500, currency="EUR"
)
Handle = WorkflowHandle[PaymentWorkflow, PaymentView]


@dataclass(frozen=True, kw_only=True)
class Branch:
    """How to drive one path through the workflow, and the status it must end in."""

    gateways: Callable[[], list[ScriptedGateway]]
    drive: Callable[[Harness, Handle, PaymentRequest], Awaitable[None]]
    expect: PaymentStatus
    risk_score: int | None = None
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    route: tuple[GatewayName, ...] = ()


async def _nothing(_h: Harness, _handle: Handle, _request: PaymentRequest) -> None:
    return None


async def _webhook(h: Harness, handle: Handle, _request: PaymentRequest) -> None:
    await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
    await handle.signal(PaymentWorkflow.gateway_event, event("ch_1"))


async def _three_d_secure(_h: Harness, handle: Handle, request: PaymentRequest) -> None:
    await handle.execute_update(
        PaymentWorkflow.initiate, InitiateRequest(fingerprint=request.fingerprint)
    )
    await handle.signal(PaymentWorkflow.gateway_event, event("ch_3ds"))


async def _operator_reconcile(h: Harness, handle: Handle, _request: PaymentRequest) -> None:
    await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
    await handle.execute_update(
        PaymentWorkflow.reconcile_now, ReconcileRequest(operator="ana", reason="customer called")
    )


def _review(verdict: ReviewVerdict) -> Callable[[Harness, Handle, PaymentRequest], Awaitable[None]]:
    async def drive(h: Harness, handle: Handle, _request: PaymentRequest) -> None:
        await h.wait_for_status(handle, PaymentStatus.IN_REVIEW)
        decision = ReviewDecision(verdict=verdict, reviewer="ana", reason="recorded history")
        await handle.execute_update(PaymentWorkflow.review, decision)
        if verdict is ReviewVerdict.APPROVE:
            await _webhook(h, handle, _request)

    return drive


async def _cancel(h: Harness, handle: Handle, _request: PaymentRequest) -> None:
    await h.wait_for_status(handle, PaymentStatus.AWAITING_WEBHOOK)
    await handle.execute_update(PaymentWorkflow.cancel, CancelPayment(reason="customer asked"))


async def _capture(h: Harness, handle: Handle, _request: PaymentRequest) -> None:
    await h.wait_for_status(handle, PaymentStatus.AUTHORIZED)
    await handle.execute_update(PaymentWorkflow.capture, CapturePayment(amount_minor=2000))


# Branches first recorded after the admission patch shipped: before_admission/ has no copy of
# them, because no payment ran them on the older code.
AFTER_ADMISSION = frozenset({"three_d_secure_endpoints"})

BRANCHES: dict[str, Branch] = {
    "ok": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING])],
        drive=_webhook,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "decline": Branch(
        gateways=lambda: [
            ScriptedGateway(
                charges=[
                    ChargeOutcome(
                        state=ChargeState.DECLINED,
                        gateway_reference="ch_d",
                        failure=Failure(code="card_declined", message="declined"),
                    )
                ]
            )
        ],
        drive=_nothing,
        expect=PaymentStatus.FAILED,
    ),
    "three_d_secure": Branch(
        gateways=lambda: [
            ScriptedGateway(
                charges=[
                    ChargeOutcome(
                        state=ChargeState.REQUIRES_ACTION,
                        gateway_reference="ch_3ds",
                        client_secret="ch_3ds_secret",
                        next_action=NextAction(type="redirect_to_url", redirect_url="http://3ds"),
                    )
                ]
            )
        ],
        drive=_three_d_secure,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "three_d_secure_endpoints": Branch(
        gateways=lambda: [
            ScriptedGateway(
                charges=[
                    ChargeOutcome(
                        state=ChargeState.REQUIRES_ACTION,
                        gateway_reference="ch_3ds",
                        client_secret="ch_3ds_secret",
                        next_action=NextAction(type="redirect_to_url", redirect_url="http://3ds"),
                    )
                ]
            )
        ],
        drive=_three_d_secure,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "silent_reconciled": Branch(
        gateways=lambda: [
            ScriptedGateway(
                charges=[PENDING], lookups=[ChargeOutcome(state=ChargeState.PENDING), SETTLED]
            )
        ],
        drive=_nothing,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "operator_reconcile": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING], lookups=[SETTLED])],
        drive=_operator_reconcile,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "flaky_retried": Branch(
        gateways=lambda: [
            ScriptedGateway(charges=[GatewayUnavailable("503"), GatewayUnavailable("503"), PENDING])
        ],
        drive=_webhook,
        expect=PaymentStatus.SUCCEEDED,
    ),
    "blocked": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING])],
        drive=_nothing,
        expect=PaymentStatus.BLOCKED,
        risk_score=90,
    ),
    "review_approved": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING])],
        drive=_review(ReviewVerdict.APPROVE),
        expect=PaymentStatus.SUCCEEDED,
        risk_score=75,
    ),
    "review_rejected": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING])],
        drive=_review(ReviewVerdict.REJECT),
        expect=PaymentStatus.BLOCKED,
        risk_score=75,
    ),
    "cancel": Branch(
        gateways=lambda: [ScriptedGateway(charges=[PENDING])],
        drive=_cancel,
        expect=PaymentStatus.CANCELED,
    ),
    "manual_capture": Branch(
        gateways=lambda: [
            ScriptedGateway(
                charges=[ChargeOutcome(state=ChargeState.AUTHORIZED, gateway_reference="ch_m")]
            )
        ],
        drive=_capture,
        expect=PaymentStatus.SUCCEEDED,
        capture=CaptureMethod.MANUAL,
    ),
    "failover": Branch(
        gateways=lambda: [
            ScriptedGateway(charges=[GatewayRefused("503 before processing")]),
            ScriptedGateway(
                gateway_name=GatewayName.STRIPE,
                charges=[ChargeOutcome(state=ChargeState.SUCCEEDED, gateway_reference="pi_1")],
            ),
        ],
        drive=_nothing,
        expect=PaymentStatus.SUCCEEDED,
        route=(GatewayName.SANDBOX, GatewayName.STRIPE),
    ),
}


async def record(
    env: WorkflowEnvironment, sessions: SessionFactory, name: str, branch: Branch
) -> Path:
    gateway, *others = branch.gateways()
    async with running_payments(env, sessions, gateway, *others, risk_score=branch.risk_score) as h:
        request = payment_request(
            payment_id=f"pay_history_{name}",
            idempotency_key=f"history-{name}",
            fingerprint=f"fp-history-{name}",
            capture=branch.capture,
            route=list(branch.route),
        )
        handle = await h.start(request)
        await branch.drive(h, handle, request)
        result = await handle.result()
        if result.status is not branch.expect:
            raise SystemExit(f"{name}: ended {result.status.value}, expected {branch.expect.value}")
        history = await handle.fetch_history()
    path = HERE / f"{name}.json"
    path.write_text(history.to_json() + "\n", encoding="utf-8")
    return path


async def _refund_succeeded(env: WorkflowEnvironment, sessions: SessionFactory) -> WorkflowHistory:
    """A partial refund: reserved, refunded at the gateway, settled by its webhook."""
    payment = seed_succeeded_payment(sessions, gateway_reference="ch_history")
    async with running_refunds(env, sessions, ScriptedGateway()) as h:
        refund = refund_input(payment, 1000, key="history-refund", fingerprint="fp-history-refund")
        handle = await h.start(refund)
        await handle.execute_update(
            RefundWorkflow.initiate, RefundInitiate(fingerprint=refund.request.fingerprint)
        )
        await h.wait_for_refund_call()
        await handle.signal(RefundWorkflow.refund_event, refund_event("re_1", event_id="evt_h1"))
        result = await handle.result()
        if result.refund is None or result.refund.status is not RefundState.SUCCEEDED:
            raise SystemExit(f"refund_succeeded: ended {result}")
        return await handle.fetch_history()


async def _dispute_won(env: WorkflowEnvironment, sessions: SessionFactory) -> WorkflowHistory:
    """A dispute opened, reminded before the evidence is due, then won."""
    payment = seed_succeeded_payment(sessions)
    due = (await env.get_current_time() + timedelta(days=5)).isoformat()
    async with running_refunds(env, sessions, ScriptedGateway()) as h:

        async def deliver(state: DisputeState, event_id: str) -> Any:
            event = GatewayEvent(
                provider=GatewayName.SANDBOX,
                event_id=event_id,
                event_type=f"dispute.{state.value}",
                state=ChargeState.SUCCEEDED,
                payment_id=payment.payment_id,
                dispute=DisputeNotice(
                    dispute_reference="dp_history",
                    state=state,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                    reason="fraudulent",
                    evidence_due_by=due,
                ),
            )
            return await env.client.start_workflow(
                DisputeWorkflow.run,
                DisputeInput(
                    dispute_id="dp_history_1",
                    provider=GatewayName.SANDBOX,
                    dispute_reference="dp_history",
                ),
                id="dispute-sandbox-dp_history",
                task_queue=h.task_queue,
                start_signal="dispute_event",
                start_signal_args=[event],
            )

        handle = await deliver(DisputeState.NEEDS_RESPONSE, "evt_d1")
        await env.sleep(timedelta(days=4))
        await deliver(DisputeState.WON, "evt_d2")
        view = await handle.result()
        kinds = [n.event_type for n in h.notifier.disputes]
        if view is None or view.status is not DisputeState.WON or len(kinds) != 3:
            raise SystemExit(f"dispute_won: ended {view}, told {kinds}")
        history: WorkflowHistory = await handle.fetch_history()
        return history


# Histories of the other workflows, recorded the same way (see the README's table).
REFUND_AND_DISPUTE: dict[
    str, Callable[[WorkflowEnvironment, SessionFactory], Awaitable[WorkflowHistory]]
] = {
    "refund_succeeded": _refund_succeeded,
    "dispute_won": _dispute_won,
}


async def record_other(env: WorkflowEnvironment, sessions: SessionFactory, name: str) -> Path:
    history = await REFUND_AND_DISPUTE[name](env, sessions)
    path = HERE / f"{name}.json"
    path.write_text(history.to_json() + "\n", encoding="utf-8")
    return path


async def register_search_attributes(env: WorkflowEnvironment) -> None:
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL_KEYS
            },
        )
    )


async def main(names: list[str]) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server())
    )
    try:
        await register_search_attributes(env)
        with tempfile.TemporaryDirectory() as scratch:
            engine = create_ledger_engine(f"sqlite:///{Path(scratch) / 'ledger.db'}")
            upgrade(engine)
            try:
                for name in names:
                    sessions = session_factory(engine)
                    if name in REFUND_AND_DISPUTE:
                        path = await record_other(env, sessions, name)
                    else:
                        path = await record(env, sessions, name, BRANCHES[name])
                    print(f"recorded {path}", flush=True)
            finally:
                engine.dispose()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = [*BRANCHES, *REFUND_AND_DISPUTE]
    parser.add_argument("branches", nargs="*", metavar="BRANCH", help=", ".join(known))
    chosen = parser.parse_args().branches or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"unknown branch {', '.join(unknown)}; choose from {', '.join(known)}")
    # The scripted failures (503s, refusals) are expected; their activity tracebacks are noise.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(chosen))
    # Free the SDK's clients and workers now, not during interpreter shutdown: the Rust core's
    # threads must not release Python objects while Python is finalizing (that aborts).
    gc.collect()
