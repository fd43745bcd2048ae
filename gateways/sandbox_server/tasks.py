"""Background work the sandbox starts after answering a request (settling charges, webhooks).

Every task is tracked so shutdown can cancel and await them: an untracked task may be garbage
collected mid-flight, and one left running outlives the event loop and warns at exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

logger = structlog.get_logger(__name__)


class TaskTracker:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("background_task_crashed", task=task.get_name(), exc_info=error)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def join(self) -> None:
        """Wait until no background work is left, including work spawned while waiting."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel whatever is still running and wait until it has stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
