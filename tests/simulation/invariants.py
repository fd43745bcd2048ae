"""The money invariants every seed must keep, checked from the simulated gateways' own truth,
paytide's ledger and the workflows' histories (docs/simulation.md lists them)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHistory
from temporalio.worker import Replayer

from paytide.codec import data_converter
from tests.simulation.driver import Outcome
from workflows.contract import ChargeState, PaymentStatus, RefundState
from workflows.events import EventType

S = PaymentStatus
_MOVING = {S.CHARGING, S.REQUIRES_ACTION, S.AWAITING_WEBHOOK, S.NEEDS_ATTENTION}
_SETTLES = {S.SUCCEEDED, S.FAILED, S.CANCELED, S.AUTHORIZED, S.CONFLICTED, S.NEEDS_ATTENTION}
_AFTER_SUCCESS = {S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED, S.DISPUTE_LOST}
# The documented state machine (docs/architecture.md, "The workflow"): from each status, the
# statuses the ledger may record next. A status may follow itself: an operator's reconcile or
# re-drive is recorded as a line of the same status.
NEXT: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.RECEIVED: frozenset({S.RISK_CHECK}),
    S.RISK_CHECK: frozenset({S.CHARGING, S.IN_REVIEW, S.BLOCKED, S.CANCELED}),
    S.IN_REVIEW: frozenset({S.CHARGING, S.BLOCKED, S.CANCELED}),
    S.CHARGING: frozenset({S.CHARGING, *_MOVING, *_SETTLES}),
    S.REQUIRES_ACTION: frozenset({*_MOVING, *_SETTLES}),
    S.AWAITING_WEBHOOK: frozenset({*_MOVING, *_SETTLES}),
    S.NEEDS_ATTENTION: frozenset({*_MOVING, *_SETTLES}),
    S.AUTHORIZED: frozenset(
        {S.AUTHORIZED, S.SUCCEEDED, S.FAILED, S.CANCELED, S.CONFLICTED, S.NEEDS_ATTENTION}
    ),
    S.SUCCEEDED: frozenset({S.SUCCEEDED, *_AFTER_SUCCESS}),
    S.PARTIALLY_REFUNDED: frozenset(_AFTER_SUCCESS),
    S.REFUNDED: frozenset({S.REFUNDED, S.DISPUTED, S.DISPUTE_LOST}),
    S.DISPUTED: frozenset({S.SUCCEEDED, *_AFTER_SUCCESS}),
    S.DISPUTE_LOST: frozenset({S.DISPUTE_LOST}),
    S.FAILED: frozenset({S.FAILED}),
    S.BLOCKED: frozenset({S.BLOCKED}),
    S.CANCELED: frozenset({S.CANCELED}),
    S.CONFLICTED: frozenset({S.CONFLICTED}),
}
_CAPTURED = {S.SUCCEEDED, *_AFTER_SUCCESS}
_NOTHING_TAKEN = {S.FAILED, S.BLOCKED, S.CANCELED}
_ALERTED = {
    S.NEEDS_ATTENTION: EventType.PAYMENT_NEEDS_ATTENTION,
    S.CONFLICTED: EventType.PAYMENT_CONFLICTED,
}


@dataclass(frozen=True)
class Violation:
    invariant: int
    subject: str
    message: str

    def __str__(self) -> str:
        return (
            f"invariant {self.invariant} ({TITLES[self.invariant]}): {self.subject}: {self.message}"
        )


TITLES = {
    1: "at most one successful charge",
    2: "final status agrees with the gateway",
    3: "refunded ≤ captured ≤ authorized",
    4: "ledger follows the state machine",
    5: "every workflow ends or waits on a timer",
    6: "histories replay deterministically",
}


def check(outcome: Outcome) -> list[Violation]:
    """Invariants 1 to 5; `replays` checks 6."""
    found: list[Violation] = []
    ended = {end.workflow_id: end for end in outcome.ends}
    for payment_id, life in outcome.world.payments.items():
        row = outcome.payments.get(payment_id)
        charges = outcome.world.charges_of(payment_id)
        holding = [c for c in charges if c.state in (ChargeState.SUCCEEDED, ChargeState.AUTHORIZED)]
        # 1: across attempts and gateways, money is taken or held at most once.
        if len(holding) > 1:
            taken = ", ".join(f"{c.reference} {c.state.value} {c.amount}" for c in holding)
            found.append(Violation(1, payment_id, f"{len(holding)} charges hold money: {taken}"))
        end = ended.get(life.workflow_id)
        running = end is None or end.status is WorkflowExecutionStatus.RUNNING
        if row is None:
            if charges:
                found.append(
                    Violation(2, payment_id, "charged at the gateway, absent from the ledger")
                )
            continue
        status = PaymentStatus(row.status)
        # 2: the final status agrees with what the gateway really did.
        if not running:
            found.extend(_agrees(payment_id, status, row, holding, outcome))
        # 3: refunded ≤ captured ≤ authorized, at the gateway and in the ledger.
        found.extend(_bounded(payment_id, row, charges, outcome, ended))
        # 4: the ledger's lines follow the state machine, in order.
        found.extend(_follows_machine(payment_id, status, outcome))
    # 5: every workflow ends, or waits in a documented state with a timer that will move it.
    for end in outcome.ends:
        found.extend(_ends(end, outcome))
    return found


def _agrees(
    payment_id: str, status: PaymentStatus, row: Any, holding: Sequence[Any], outcome: Outcome
) -> list[Violation]:
    found = []
    if status in _CAPTURED:
        captured = [c for c in holding if c.state is ChargeState.SUCCEEDED]
        if len(captured) != 1:
            found.append(
                Violation(2, payment_id, f"ledger says {status.value}, gateway captured nothing")
            )
        else:
            charge = captured[0]
            if charge.amount != row.amount_minor or charge.currency != row.currency:
                found.append(
                    Violation(
                        2,
                        payment_id,
                        f"ledger says {status.value} for {row.amount_minor} {row.currency}, "
                        f"gateway charged {charge.amount} {charge.currency}",
                    )
                )
            if row.amount_captured != charge.captured:
                found.append(
                    Violation(
                        2,
                        payment_id,
                        f"ledger says {row.amount_captured} captured, gateway captured "
                        f"{charge.captured}",
                    )
                )
    elif status in _NOTHING_TAKEN:
        if holding:
            said = ", ".join(f"{c.reference} {c.state.value}" for c in holding)
            found.append(
                Violation(2, payment_id, f"ledger says {status.value}, gateway holds {said}")
            )
    elif status in _ALERTED:
        kind = _ALERTED[status]
        if (payment_id, str(kind)) not in outcome.alerts:
            found.append(Violation(2, payment_id, f"{status.value} without a {kind} alert"))
    else:
        found.append(
            Violation(2, payment_id, f"the workflow ended, the ledger still says {status.value}")
        )
    return found


def _bounded(
    payment_id: str, row: Any, charges: Sequence[Any], outcome: Outcome, ended: dict[str, Any]
) -> list[Violation]:
    found = []
    for charge in charges:
        captured = charge.captured if charge.state is ChargeState.SUCCEEDED else 0
        if not charge.refunded <= captured <= charge.amount:
            found.append(
                Violation(
                    3,
                    payment_id,
                    f"at the gateway {charge.reference}: refunded {charge.refunded}, captured "
                    f"{captured}, authorized {charge.amount}",
                )
            )
    refunds = outcome.refunds.get(payment_id, [])
    succeeded = sum(r.amount_minor for r in refunds if r.status == RefundState.SUCCEEDED)
    reserved = sum(r.amount_minor for r in refunds if r.status != RefundState.FAILED)
    captured_in_ledger = row.amount_captured or 0
    if not succeeded <= captured_in_ledger <= row.amount_minor or reserved > captured_in_ledger:
        found.append(
            Violation(
                3,
                payment_id,
                f"in the ledger: refunded {succeeded} (reserved {reserved}), captured "
                f"{row.amount_captured}, authorized {row.amount_minor}",
            )
        )
    settled = all(
        ended.get(r.workflow_id) is not None
        and ended[r.workflow_id].status is not WorkflowExecutionStatus.RUNNING
        for r in refunds
    )
    at_gateway = sum(charge.refunded for charge in charges)
    if settled and succeeded != at_gateway:
        found.append(
            Violation(
                3,
                payment_id,
                f"the ledger's succeeded refunds ({succeeded}) differ from the gateway's "
                f"({at_gateway})",
            )
        )
    return found


def _follows_machine(payment_id: str, status: PaymentStatus, outcome: Outcome) -> list[Violation]:
    lines = outcome.events.get(payment_id, [])
    if not lines:
        return [Violation(4, payment_id, "no ledger lines")]
    statuses = [PaymentStatus(line.status) for line in lines]
    found = []
    if statuses[0] is not S.RECEIVED:
        found.append(Violation(4, payment_id, f"first line is {statuses[0].value}, not received"))
    for before, after in itertools.pairwise(statuses):
        if after not in NEXT[before]:
            trail = " → ".join(s.value for s in statuses)
            found.append(Violation(4, payment_id, f"{before.value} → {after.value} in {trail}"))
            break
    seqs = [line.seq for line in lines]
    if seqs != sorted(set(seqs)):
        found.append(Violation(4, payment_id, f"sequence numbers out of order: {seqs}"))
    if statuses[-1] is not status:
        found.append(
            Violation(4, payment_id, f"row says {status.value}, last line {statuses[-1].value}")
        )
    return found


def _ends(end: Any, outcome: Outcome) -> list[Violation]:
    if end.status is WorkflowExecutionStatus.COMPLETED:
        return []
    if end.status is WorkflowExecutionStatus.RUNNING:
        status = _ledger_status(end.workflow_id, outcome)
        if status is S.NEEDS_ATTENTION and end.timer_pending:
            outcome.seen["still_waiting:needs_attention"] += 1
            return []
        timer = "a timer pending" if end.timer_pending else "no timer that could move it"
        return [Violation(5, end.workflow_id, f"still running ({status}) with {timer}")]
    state = end.status.name if end.status else "unknown"
    return [Violation(5, end.workflow_id, f"ended {state}: {end.error}")]


def _ledger_status(workflow_id: str, outcome: Outcome) -> PaymentStatus | str:
    for payment_id, life in outcome.world.payments.items():
        if life.workflow_id == workflow_id:
            row = outcome.payments.get(payment_id)
            return PaymentStatus(row.status) if row else "absent"
    return "not a payment"


async def replays(outcome: Outcome, workflows: Sequence[type]) -> list[Violation]:
    """6: every history replays with the code that is checked (no non-determinism)."""
    replayer = Replayer(workflows=list(workflows), data_converter=data_converter(None))

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for history in outcome.histories:
            yield history

    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    return [
        Violation(6, workflow_id, str(failure))
        for workflow_id, failure in results.replay_failures.items()
    ]
