"""How many payments each load shape starts, with a payment that does nothing."""

from __future__ import annotations

import asyncio

from bench import load
from bench.phase import Phase


async def _instant(phase: Phase) -> None:
    phase.first_ms.append(0.0)
    phase.settle_ms.append(0.0)


async def test_sequential_runs_exactly_count_payments() -> None:
    """The sequential shape makes exactly the requested number of payments."""
    phase = Phase("paytide", "sequential")
    await load.sequential(_instant, phase, 7)
    assert len(phase.settle_ms) == 7


async def test_fixed_rate_sends_rate_times_seconds() -> None:
    """Open loop at 200/s for 0.05 s sends 10 payments, on a clock, whatever the answers."""
    phase = Phase("paytide", "fixed-rate", target_rate=200)
    await load.fixed_rate(_instant, phase, 0.05)
    assert len(phase.settle_ms) == 10


async def test_closed_loop_uses_every_client_and_stops() -> None:
    """Each of the clients makes at least one payment, and the phase ends after its time."""
    clients: set[int] = set()

    async def one(phase: Phase) -> None:
        task = asyncio.current_task()
        assert task is not None
        clients.add(id(task))
        phase.settle_ms.append(0.0)
        await asyncio.sleep(0.01)

    phase = Phase("paytide", "saturation", clients=3)
    await load.closed_loop(one, phase, 0.3)
    assert len(clients) == 3
    assert len(phase.settle_ms) >= 3
