"""The three load shapes, for any single-payment coroutine ``one(phase)``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.phase import Phase

One = Callable[[Phase], Coroutine[Any, Any, None]]


async def sequential(one: One, phase: Phase, count: int) -> None:
    """One client, one payment at a time."""
    for _ in range(count):
        await one(phase)


async def closed_loop(one: One, phase: Phase, seconds: float) -> None:
    """``phase.clients`` clients, each starting its next payment when the last one succeeded;
    none starts after ``seconds``, in-flight payments finish."""
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            await one(phase)

    await asyncio.gather(*(client() for _ in range(phase.clients)))


async def fixed_rate(one: One, phase: Phase, seconds: float) -> None:
    """Open loop: a new payment every 1/rate seconds whatever the answers, for ``seconds``;
    then wait for those in flight. Sends are scheduled on an absolute clock, so a late tick
    does not shift the ones after it."""
    assert phase.target_rate
    interval = 1 / phase.target_rate
    started = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()
    sent = 0
    while (due := started + sent * interval) < started + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(one(phase))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
    if in_flight:
        await asyncio.gather(*in_flight)
