"""A scripted outage: for a window of seconds the processor refuses every new charge with 503.

Tests switch it on through ``POST /v1/_test/outage`` to prove that paytide rides out a gateway
that is down for a while: the refusal happens before anything is recorded, like a load balancer
with no healthy backend, so a retry with the same idempotency key is always safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# An outage longer than this is a mistake in the test that asked for it, not a scenario.
MAX_OUTAGE_SECONDS = 300.0


class Outage:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    def start(self, seconds: float) -> float:
        """Refuse charges for ``seconds`` from now (0 ends an outage); return the seconds left."""
        self._until = self._clock() + seconds
        return self.remaining

    @property
    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    @property
    def active(self) -> bool:
        return self.remaining > 0
