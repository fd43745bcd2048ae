"""Each invariant catches a planted bug (tests/simulation/planted.py) within the CI budget.

Each test runs one seed twice on one time-skipping server: with the bug, where the invariant must
report it, and without, where every invariant must hold. The seed is the first of the budget
(0..199) that finds the bug: ``python -m tests.simulation --plant NAME`` searches for it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from tests.simulation.planted import PLANTS
from tests.simulation.run import open_lane, run_seed
from tests.simulation.scenario import draw


async def _found_only_with_the_bug(name: str, seed: int) -> None:
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)
    plant = PLANTS[name]
    async with open_lane() as lane:
        planted = replace(lane, workflows=plant.workflows, activities_hook=plant.activities_hook)
        with_bug = await run_seed(planted, draw(seed))
        assert with_bug.crash is None, with_bug.report()
        found = {violation.invariant for violation in with_bug.violations}
        assert plant.invariant in found, with_bug.report()
        without = await run_seed(lane, draw(seed))
        assert not without.failed, without.report()


async def test_invariant_1_finds_a_gateway_key_taken_from_the_retry_attempt() -> None:
    """A charge key derived from the activity's attempt charges twice after a timeout."""
    # Seed 0 is the first in the budget that finds it (its second payment's charge times out
    # after charging; the retry charges again). Invariant 2 reports it too: two captures.
    await _found_only_with_the_bug("key-per-try", 0)


async def test_invariant_2_finds_a_missing_amount_check() -> None:
    """Without the conflict check, a charge of the wrong amount settles as succeeded."""
    # Seed 30 is the first in the budget that finds it (the gateway charged 10998 for 9999).
    await _found_only_with_the_bug("no-conflict-check", 30)


async def test_invariant_3_finds_a_reservation_that_forgets_pending_refunds() -> None:
    """Refunds racing a reservation that counts only succeeded refunds refund too much."""
    # Seed 8 is the first in the budget that finds it (three refunds of a 500 payment, started
    # together: 1279 refunded).
    await _found_only_with_the_bug("pending-refunds-uncounted", 8)


async def test_invariant_4_finds_a_step_back_to_charging() -> None:
    """A capture recorded as charging again is a transition the state machine forbids."""
    # Seed 11 is the first in the budget that finds it (a manual capture: authorized → charging).
    await _found_only_with_the_bug("capture-as-charging", 11)


async def test_invariant_5_finds_a_webhook_wait_without_a_timer() -> None:
    """A payment that waits for its webhook with no deadline never ends when the webhook does
    not come."""
    # Seed 10 is the first in the budget that finds it (a declined 3-D Secure charge whose
    # webhook is late: nothing moves the payment, and it times out after the server's ten-year
    # default). Invariant 2 reports it too: the ledger still says requires_action.
    await _found_only_with_the_bug("webhook-wait-without-timer", 10)


async def test_invariant_6_finds_a_command_made_only_when_not_replaying() -> None:
    """A command guarded by is_replaying is missing when the history is replayed."""
    # Seed 0 is the first in the budget that finds it (every payment that ends has the command).
    await _found_only_with_the_bug("replay-dependent", 0)
