"""A short-lived cache of API key records, so the hot path is not a ledger read per request.

An entry lives ``ttl`` seconds, and that is the bound on how long a revoked key keeps working in
a running API process (docs/security.md). Unknown key ids are cached too, so a stream of made-up
keys costs one ledger read per id and period, not one per request. The cache holds hashes and
states, never a key's secret; the secret of every request is still checked against the hash.

Keys the ledger knows and key ids it does not are kept apart, each in its own bounded LRU: anyone
can make up key ids, so a flood of them only ever pushes out other made-up ids, never a real key
(which would send every real request back to the ledger).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from api.lru import Lru
from ledger.merchants import KeyRecord

# Bounds on entries; past one, its least recently used entry goes. Known keys: one per key the
# merchants use. Unknown ids: enough to absorb a scan's repeats, small because they are cheap.
MAX_KNOWN = 10_000
MAX_UNKNOWN = 1_000


class _Missing:
    pass


MISSING: Final = _Missing()


class KeyCache:
    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_known: int = MAX_KNOWN,
        max_unknown: int = MAX_UNKNOWN,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._known: Lru[str, tuple[float, KeyRecord]] = Lru(max_known)
        # Key id -> when the ledger said it does not exist.
        self._unknown: Lru[str, float] = Lru(max_unknown)
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def lookup(
        self, key_id: str, load: Callable[[], Awaitable[KeyRecord | None]]
    ) -> KeyRecord | None:
        """The record from the cache, or from ``load``; concurrent misses of one key share one
        load, so a burst of requests with a new key makes one ledger read, not one each."""
        cached = self.get(key_id)
        if not isinstance(cached, _Missing):
            return cached
        pending = self._loading.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._loading[key_id] = future
        try:
            record = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            # Waiters re-raise it; nobody may be waiting, so mark it retrieved here.
            future.exception()
            raise
        finally:
            del self._loading[key_id]
        future.set_result(record)
        self.put(key_id, record)
        return record

    def get(self, key_id: str) -> KeyRecord | _Missing | None:
        """The cached record (None: known not to exist), or MISSING when the ledger must say."""
        now = self._clock()
        known = self._known.get(key_id)
        if known is not None:
            stored, record = known
            if now - stored < self.ttl:
                return record
            self._known.pop(key_id)
            return MISSING
        unknown_since = self._unknown.get(key_id)
        if unknown_since is None:
            return MISSING
        if now - unknown_since < self.ttl:
            return None
        self._unknown.pop(key_id)
        return MISSING

    def put(self, key_id: str, record: KeyRecord | None) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        if record is None:
            self._known.pop(key_id)
            self._unknown.put(key_id, now)
        else:
            self._unknown.pop(key_id)
            self._known.put(key_id, (now, record))
