"""Planted bugs: one small bug per invariant, to show that the simulation finds each of them
within its CI budget (seeds 0..199).

Each bug is a minimal change to real code, made without touching it: a subclass of the real
workflow registered under the same workflow name, overriding one method, or one activity swapped
through the lane's ``activities_hook``. ``python -m tests.simulation --plant NAME`` searches the
budget for the first seed that finds one; ``test_planted.py`` pins that seed.

The workflow subclasses live at module level so the workflow sandbox can import this module; what
is not workflow code is passed through.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from temporalio import activity, workflow

from workflows.dispute import DisputeWorkflow
from workflows.payment import CHARGE_FINAL, WAITING, PaymentWorkflow
from workflows.refund import RefundWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.gateway import GatewayActivities
    from activities.ledger_errors import ledger_transaction
    from activities.refund_ledger import RefundLedgerActivities
    from ledger import refunds
    from paytide import search_attributes as sa
    from tests.simulation.driver import ActivitiesHook
    from tests.simulation.run import Report, SeedResult, run_seeds
    from workflows.contract import (
        CapturePayment,
        ChargeOutcome,
        ChargeRequest,
        PaymentInput,
        PaymentStatus,
        PaymentView,
        RefundState,
    )
    from workflows.refund_contract import Reservation, ReservationResult

# The seeds CI runs: a planted bug counts as found only by one of these.
BUDGET = range(200)


# ---- 1: at most one successful charge ---------------------------------------------------------


def _key_per_try(activities: list[Any]) -> list[Any]:
    """The charge activity derives its gateway key from its own retry attempt (the mistake
    STYLE.md warns of): a try after a timeout that did charge is a new charge."""

    def wrap(real: Callable[[ChargeRequest], Any]) -> Callable[[ChargeRequest], Any]:
        @activity.defn(name="charge_payment")
        async def charge_payment(request: ChargeRequest) -> ChargeOutcome:
            key = f"{request.idempotency_key}/try/{activity.info().attempt}"
            outcome: ChargeOutcome = await real(replace(request, idempotency_key=key))
            return outcome

        return charge_payment

    return _swap(activities, GatewayActivities.charge, wrap)


# ---- 2: the final status agrees with the gateway ----------------------------------------------


@workflow.defn(name="PaymentWorkflow")
class NoConflictCheck(PaymentWorkflow):
    """The amount check is gone: a gateway that charged another amount settles as succeeded."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        return await super().run(input)

    def _conflicts(self, outcome: ChargeOutcome) -> bool:
        return False


# ---- 3: refunded ≤ captured ≤ authorized ------------------------------------------------------

# ledger.refunds.reserve with one constant changed: pending refunds no longer count against what
# is refundable, only succeeded ones. The rest of the function is the real one, unchanged.
_reserve_counting_succeeded_only = types.FunctionType(
    refunds.reserve.__code__,
    {**refunds.reserve.__globals__, "COUNTED_STATES": (RefundState.SUCCEEDED.value,)},
    "reserve",
)


class PendingRefundsUncounted(RefundLedgerActivities):
    """The reservation forgets refunds still pending at the gateway, so refunds of one payment
    started together each fit on their own and together refund more than was captured."""

    @activity.defn(name="reserve_refund")
    def reserve(self, reservation: Reservation) -> ReservationResult:
        with ledger_transaction(self._sessions) as session:
            result: ReservationResult = _reserve_counting_succeeded_only(session, reservation)
            return result


def _pending_refunds_uncounted(activities: list[Any]) -> list[Any]:
    def wrap(real: Any) -> Any:
        # The worker's own ledger activities, with the buggy method in place of the real one.
        return types.MethodType(PendingRefundsUncounted.reserve, real.__self__)

    return _swap(activities, RefundLedgerActivities.reserve, wrap)


# ---- 4: the ledger follows the state machine --------------------------------------------------


@workflow.defn(name="PaymentWorkflow")
class CaptureRecordedAsCharging(PaymentWorkflow):
    """A capture is shown as ``charging`` again while the gateway captures: authorized →
    charging is a step back the state machine does not have."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        return await super().run(input)

    async def _capture_at_gateway(self, request: CapturePayment) -> ChargeOutcome:
        await self._transition(PaymentStatus.CHARGING, gateway=self._gateway, reason="capturing")
        return await super()._capture_at_gateway(request)


# ---- 5: every workflow ends or waits on a timer -----------------------------------------------


@workflow.defn(name="PaymentWorkflow")
class WebhookWaitWithoutTimer(PaymentWorkflow):
    """The charge's webhook is awaited with no deadline: when it is lost (or late), nothing ever
    asks the gateway, and the payment waits until the workflow's execution timeout (the test
    server's default is ten years, which time skipping reaches at once)."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        return await super().run(input)

    async def _follow_until_final(self, outcome: ChargeOutcome) -> ChargeOutcome:
        if outcome.state in WAITING:
            await workflow.wait_condition(
                lambda: self._next_event(CHARGE_FINAL) is not None or self._cancel is not None
            )
        return await super()._follow_until_final(outcome)


# ---- 6: histories replay deterministically ----------------------------------------------------


@workflow.defn(name="PaymentWorkflow")
class ReplayDependent(PaymentWorkflow):
    """Once the payment is final, its status is written to the search attributes "only the first
    time", guarded by ``is_replaying``: a command that exists only when the history is not
    being replayed, so replaying the history meets an event the code no longer makes."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        view = await super().run(input)
        if not workflow.unsafe.is_replaying():
            workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(view.status.value)])
        return view


# ---- The plants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    name: str
    invariant: int  # the invariant (invariants.TITLES) that must catch it
    bug: str
    payment: type = PaymentWorkflow
    activities_hook: ActivitiesHook | None = None

    @property
    def workflows(self) -> tuple[type, ...]:
        return (self.payment, RefundWorkflow, DisputeWorkflow)

    def finds(self, result: SeedResult) -> bool:
        """Whether ``result`` reports a violation of this plant's invariant."""
        return any(v.invariant == self.invariant for v in result.violations)


PLANTS = {
    plant.name: plant
    for plant in (
        Plant(
            "key-per-try",
            1,
            "the charge activity derives the gateway key from its retry attempt",
            activities_hook=_key_per_try,
        ),
        Plant(
            "no-conflict-check",
            2,
            "PaymentWorkflow._conflicts always False: a wrong-amount charge settles as succeeded",
            payment=NoConflictCheck,
        ),
        Plant(
            "pending-refunds-uncounted",
            3,
            "the refund reservation counts only succeeded refunds, not pending ones",
            activities_hook=_pending_refunds_uncounted,
        ),
        Plant(
            "capture-as-charging",
            4,
            "a manual capture records charging again (authorized → charging)",
            payment=CaptureRecordedAsCharging,
        ),
        Plant(
            "webhook-wait-without-timer",
            5,
            "the charge's webhook is awaited without a deadline",
            payment=WebhookWaitWithoutTimer,
        ),
        Plant(
            "replay-dependent",
            6,
            "a command issued only when not replaying (workflow.unsafe.is_replaying)",
            payment=ReplayDependent,
        ),
    )
}


async def search(
    plant: Plant,
    seeds: Iterable[int] = BUDGET,
    *,
    lanes: int = 2,
    progress: Callable[[SeedResult, int], None] | None = None,
) -> tuple[SeedResult | None, Report]:
    """Run ``seeds`` in order with ``plant`` until one finds it; that first seed's result (None
    if no seed did) and the report of every seed run."""
    report = await run_seeds(
        seeds,
        lanes=lanes,
        workflows=plant.workflows,
        activities_hook=plant.activities_hook,
        progress=progress,
        stop_when=plant.finds,
    )
    # Lanes take seeds in order and finish the one they hold: every seed below the one that
    # stopped the run was run, so the lowest finding seed is the first.
    found = [result for result in report.results if plant.finds(result)]
    return (min(found, key=lambda r: r.seed) if found else None), report


def _swap(
    activities: Sequence[Any], method: Callable[..., Any], wrap: Callable[[Any], Any]
) -> list[Any]:
    """``activities`` with the worker's bound ``method`` replaced by ``wrap(it)``."""
    found = [fn for fn in activities if getattr(fn, "__func__", None) is method]
    assert len(found) == 1, f"{method.__qualname__} is not among the worker's activities"
    return [wrap(fn) if fn in found else fn for fn in activities]
