"""Concurrent identical requests in one API process share one piece of work.

A client that times out and retries, or a load balancer that re-sends, can put dozens of copies
of one ``POST /payments`` into the same process at once. Without this, each copy makes its own
update-with-start call and queues behind Temporal's per-workflow cap on in-flight updates, so a
burst of duplicates costs a server round trip and a workflow task each. With it, the first copy
does the work and the others wait for its outcome. Correctness never depends on this: copies that
reach other API processes are still deduplicated by the workflow id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")


class Coalescer(Generic[Key, Result]):
    def __init__(self) -> None:
        self._flights: dict[Key, asyncio.Task[Result]] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    async def run(self, key: Key, work: Callable[[], Awaitable[Result]]) -> tuple[Result, bool]:
        """The outcome of ``work`` for ``key``, and whether this caller was the one that ran it.

        The work runs as its own task, so a caller that goes away (a client disconnect cancels
        its handler) does not cancel it for the callers still waiting on it. Its exception, if
        any, is raised to every caller.
        """
        task = self._flights.get(key)
        leader = task is None
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._land(key, done))
        return await asyncio.shield(task), leader

    def _land(self, key: Key, done: asyncio.Task[Result]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        # Marks the exception as retrieved when every waiter was cancelled before it came.
        if not done.cancelled():
            done.exception()
