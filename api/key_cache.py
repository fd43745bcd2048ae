"""A short-lived cache of API key records, so the hot path is not a ledger read per request.

An entry lives ``ttl`` seconds, and that is the bound on how long a revoked key keeps working in
a running API process (docs/security.md). Unknown key ids are cached too, so a stream of made-up
keys costs one ledger read per id and period, not one per request. The cache holds hashes and
states, never a key's secret; the secret of every request is still checked against the hash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ledger.merchants import KeyRecord

# Bound on entries; past it the whole cache is dropped (simple, and rare: one entry per key).
MAX_ENTRIES = 10_000


class _Missing:
    pass


MISSING: Final = _Missing()


class KeyCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, KeyRecord | None]] = {}
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
        entry = self._entries.get(key_id)
        if entry is None:
            return MISSING
        stored, record = entry
        if self._clock() - stored >= self.ttl:
            del self._entries[key_id]
            return MISSING
        return record

    def put(self, key_id: str, record: KeyRecord | None) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_id] = (self._clock(), record)
