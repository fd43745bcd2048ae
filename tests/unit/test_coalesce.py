"""Concurrent identical initiations in one API process share one piece of work."""

from __future__ import annotations

import asyncio

import pytest

from api.coalesce import Coalescer

pytestmark = pytest.mark.unit


class Counted:
    """Work that counts its runs and finishes only when the test releases it."""

    def __init__(self, result: str = "done", error: Exception | None = None) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def test_concurrent_callers_run_the_work_once_and_one_of_them_leads() -> None:
    """Fifty callers with one key: one run, fifty identical results, exactly one leader."""
    flights: Coalescer[str, str] = Coalescer()
    work = Counted()
    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    assert flights.in_flight() == 1
    work.release.set()
    outcomes = await asyncio.gather(*callers)
    assert work.runs == 1
    assert {result for result, _ in outcomes} == {"done"}
    assert sum(1 for _, leader in outcomes if leader) == 1
    assert flights.in_flight() == 0


async def test_different_keys_do_not_share_work() -> None:
    """Two keys in flight at once are two runs."""
    flights: Coalescer[str, str] = Coalescer()
    first, second = Counted("a"), Counted("b")
    a = asyncio.create_task(flights.run("a", first))
    b = asyncio.create_task(flights.run("b", second))
    await asyncio.sleep(0)
    first.release.set()
    second.release.set()
    assert (await a, await b) == (("a", True), ("b", True))


async def test_an_error_reaches_every_caller() -> None:
    """The work's exception is raised to the leader and to each waiting copy."""
    flights: Coalescer[str, str] = Coalescer()
    work = Counted(error=ValueError("gateway said no"))
    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    work.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results), results
    assert work.runs == 1


async def test_a_caller_that_goes_away_does_not_cancel_the_others_work() -> None:
    """Cancelling the leader's wait (its client hung up) leaves the work running for the rest."""
    flights: Coalescer[str, str] = Coalescer()
    work = Counted()
    leader = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    work.release.set()
    assert await follower == ("done", False)
    assert work.runs == 1


async def test_a_finished_key_runs_again() -> None:
    """Coalescing is for copies in flight together; a later request does its own work."""
    flights: Coalescer[str, str] = Coalescer()
    work = Counted()
    work.release.set()
    assert await flights.run("k", work) == ("done", True)
    assert await flights.run("k", work) == ("done", True)
    assert work.runs == 2
