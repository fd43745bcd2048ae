"""Shrink a failing scenario: take parts away, one at a time, while it still breaks the same
invariant, until nothing more can go. What is left is the story of the bug."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from tests.simulation.driver import Lane
from tests.simulation.run import SeedResult, run_seed
from tests.simulation.scenario import PaymentPlan, Scenario

MAX_RUNS = 150


def _without(items: tuple[object, ...]) -> Iterator[tuple[object, ...]]:
    for index in range(len(items)):
        yield items[:index] + items[index + 1 :]


def _smaller_plans(plan: PaymentPlan) -> Iterator[PaymentPlan]:
    if plan.dispute:
        yield replace(plan, dispute="")
    for refunds in _without(plan.refunds):
        yield replace(plan, refunds=refunds)  # type: ignore[arg-type]
    for moments in _without(plan.moments):
        yield replace(plan, moments=moments)  # type: ignore[arg-type]
    if plan.risk_bias:
        yield replace(plan, risk_bias=0)
    if len(plan.route) > 1:
        yield replace(plan, route=plan.route[:-1])
    for name in ("charges", "lookups", "modifies", "fates"):
        for shorter in _without(getattr(plan, name)):
            yield replace(plan, **{name: shorter})
    for index, refund in enumerate(plan.refunds):
        for name in ("answers", "fates"):
            for shorter in _without(getattr(refund, name)):
                refunds = list(plan.refunds)
                refunds[index] = replace(refund, **{name: shorter})
                yield replace(plan, refunds=tuple(refunds))


def _smaller(scenario: Scenario) -> Iterator[Scenario]:
    payments = scenario.payments
    if len(payments) > 1:
        for fewer in _without(payments):
            yield replace(scenario, payments=fewer)  # type: ignore[arg-type]
    for index, plan in enumerate(payments):
        for smaller in _smaller_plans(plan):
            changed = list(payments)
            changed[index] = smaller
            yield replace(scenario, payments=tuple(changed))


def _kinds(result: SeedResult) -> set[int]:
    return {violation.invariant for violation in result.violations}


async def shrink(
    lane: Lane, failing: SeedResult, progress: Callable[[str], None] | None = None
) -> SeedResult:
    """The smallest scenario found that still breaks one of ``failing``'s invariants."""
    wanted = _kinds(failing)
    best = failing
    runs = 0
    improved = True
    while improved and runs < MAX_RUNS:
        improved = False
        for candidate in _smaller(best.scenario):
            runs += 1
            result = await run_seed(lane, candidate)
            if result.failed and (_kinds(result) & wanted or (not wanted and result.crash)):
                best = result
                improved = True
                if progress:
                    progress(f"run {runs}: still failing with {len(str(candidate))} characters")
                break
            if runs >= MAX_RUNS:
                break
    return best
