"""Per-key rate limiting: one token bucket per API key, held in this process.

Each key may send ``burst`` requests at once and ``rate`` per second after that. The buckets live
in the API process, so N API instances behind a load balancer allow up to N times the rate; a
deployment that needs one shared limit puts it in front (gateway, Redis) — docs/security.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Buckets idle this long are full again anyway; dropping them bounds memory.
_IDLE_BUCKETS_AFTER = 300.0
_SWEEP_EVERY = 1000


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until one token is back."""
        wait = self.wait(now)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0.0: there is one now); spends nothing."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._calls = 0

    def wait_for(self, key: str) -> float:
        """Spend one of ``key``'s tokens; 0.0 when allowed, else seconds to wait."""
        now = self._clock()
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(rate=self.rate, burst=self.burst, tokens=self.burst, updated=now)
            self._buckets[key] = bucket
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if now - b.updated > _IDLE_BUCKETS_AFTER]
        for key in idle:
            del self._buckets[key]


def retry_after_header(wait: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(wait)))
