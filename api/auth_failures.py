"""Failed authentication, limited per client address: nobody may guess keys (or the codec's
token, api/codec.py), or send the ledger a stream of made-up ones, at the speed of the network.
Webhook signatures are not counted: an HMAC cannot be guessed, and a gateway whose secret was
rotated would lock its own deliveries out.

Each address may fail ``limit`` times at once, and failures come back at ``limit`` per ``window``
seconds: a token bucket that only failures spend. An address with none left is answered 429
``too_many_auth_failures`` with Retry-After before its key is even looked up, whatever it sends,
until one comes back. Successes spend nothing, so a client that authenticates is never slowed
by this limit while it is under it.

Memory is bounded twice. Addresses that have failed but may still fail ("suspects") sit in an LRU
of ``max_tracked``; an address that has run out moves to an LRU of its own of the same size. A
flood of distinct addresses failing once each only pushes out other suspects; pushing out a
blocked address costs ``limit`` failures from each of ``max_tracked`` new addresses. IPv6
addresses count per /64, the block one host is usually given, so one host cannot walk through
its own addresses.

The address is the TCP peer's, as uvicorn reports it: behind a reverse proxy that is the proxy,
unless uvicorn trusts its forwarded headers (FORWARDED_ALLOW_IPS; docs/configuration.md).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from api.lru import Lru
from api.rate_limit import TokenBucket

MAX_TRACKED = 10_000
IPV6_HOST_PREFIX = 64


def client_key(host: str | None) -> str:
    """What failures are counted against: the IPv4 address, the IPv6 /64, or the raw host."""
    if host is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_HOST_PREFIX}", strict=False))
    return str(address)


class AuthFailures:
    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        """``limit`` 0 turns the limit off (a proxy in front does it)."""
        if limit < 0 or window <= 0:
            raise ValueError("an authentication failure limit needs limit >= 0 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._suspects: Lru[str, TokenBucket] = Lru(max_tracked)
        self._blocked: Lru[str, TokenBucket] = Lru(max_tracked)

    @property
    def tracked(self) -> int:
        """How many addresses are remembered (suspects and blocked)."""
        return len(self._suspects) + len(self._blocked)

    def wait_for(self, host: str | None) -> float:
        """Seconds this address must wait before its next attempt is even looked at; 0.0 when
        it may try now. Spends nothing."""
        if self.limit == 0:
            return 0.0
        key = client_key(host)
        bucket = self._blocked.get(key)
        if bucket is None:
            return 0.0
        wait = bucket.wait(self._clock())
        if wait == 0.0:
            # A failure has come back: a suspect again, evictable like any other.
            self._blocked.pop(key)
            self._suspects.put(key, bucket)
        return wait

    def failed(self, host: str | None) -> bool:
        """Count one failed authentication against this address; True when that was its last
        allowed one (it is refused from now on, until a failure comes back)."""
        if self.limit == 0:
            return False
        key = client_key(host)
        now = self._clock()
        bucket = self._blocked.pop(key) or self._suspects.pop(key)
        if bucket is None:
            bucket = TokenBucket(
                rate=self.limit / self.window, burst=self.limit, tokens=self.limit, updated=now
            )
        bucket.take(now)
        if bucket.wait(now) > 0:
            self._blocked.put(key, bucket)
            return True
        self._suspects.put(key, bucket)
        return False
