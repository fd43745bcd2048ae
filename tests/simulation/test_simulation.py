"""The fault simulation's CI budget, and the regressions it found (each named after its seed).

The budget runs seeds 0..199 on two time-skipping servers; any seed can be rerun alone with
``python -m tests.simulation --seed N`` (docs/simulation.md).
"""

from __future__ import annotations

import logging

from tests.simulation.invariants import check, replays
from tests.simulation.run import open_lane, run_seeds
from tests.simulation.scenario import (
    ChargeAnswer,
    Fate,
    ModifyAnswer,
    PaymentPlan,
    Resolution,
    Scenario,
)
from workflows.contract import CaptureMethod, GatewayName, PaymentStatus

BUDGET = range(200)


async def test_the_ci_budget_of_seeds_keeps_every_invariant() -> None:
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)
    report = await run_seeds(BUDGET, lanes=2)
    assert len(report.results) == len(BUDGET)
    assert not report.failures, "\n\n".join(f.report() for f in report.failures)
    # The budget explores what it claims to: every kind of gateway answer and webhook fate.
    seen = report.coverage()
    for kind in (
        "charge:timeout_after_charging",
        "charge:3ds",
        "webhook:duplicate",
        "webhook:late",
        "webhook:lost",
        "action:restart_worker",
        "dispute:lost",
    ):
        assert seen[kind] > 0, f"the budget never drew {kind}"


async def test_seed_322_a_dispute_leaves_a_conflicted_payment_conflicted() -> None:
    """Seed 322, shrunk: the gateway charged 2750 for a 2500 payment (conflicted, operators
    alerted), then the customer disputed and lost. The dispute used to move the payment to
    disputed and dispute_lost, hiding the conflict and leaving the ledger saying 2500 was
    charged."""
    scenario = Scenario(
        seed=322,
        payments=(
            PaymentPlan(
                amount=2500,
                currency="EUR",
                capture=CaptureMethod.AUTOMATIC,
                route=(GatewayName.ADYEN,),
                charges=((ChargeAnswer.WRONG_AMOUNT, Resolution.SUCCEED),),
                dispute="lost",
            ),
        ),
    )
    async with open_lane() as lane:
        outcome = await lane.run(scenario)
        assert check(outcome) + await replays(outcome, lane.workflows) == []
    (payment,) = outcome.payments.values()
    assert payment.status == PaymentStatus.CONFLICTED
    (dispute,) = next(iter(outcome.disputes.values()))
    assert dispute.status == "lost"  # the dispute itself is recorded, on its own row


async def test_seed_677_a_void_whose_webhook_is_lost_is_reconciled() -> None:
    """Seed 677, shrunk: a manual-capture authorization expired; the gateway accepted the void
    and confirmed it only by webhook, which was lost. The workflow waited for the webhook with
    no timer after the maximum wait, so nothing could ever end it. It now asks the gateway at
    each deadline, as it does while charging."""
    scenario = Scenario(
        seed=677,
        payments=(
            PaymentPlan(
                amount=120000,
                currency="EUR",
                capture=CaptureMethod.MANUAL,
                route=(GatewayName.SANDBOX,),
                modifies=(ModifyAnswer.ASYNC,),
                fates=(Fate.ON_TIME, Fate.LOST),
            ),
        ),
    )
    async with open_lane() as lane:
        outcome = await lane.run(scenario)
        assert check(outcome) + await replays(outcome, lane.workflows) == []
    (payment,) = outcome.payments.values()
    assert payment.status == PaymentStatus.CANCELED
