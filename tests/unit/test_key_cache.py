"""The API's short-lived key cache: entries expire (the bound on revocation), misses coalesce."""

from __future__ import annotations

import asyncio

import pytest

from api.key_cache import MISSING, KeyCache
from ledger.merchants import KeyRecord
from paytide.api_keys import Role

pytestmark = pytest.mark.unit

RECORD = KeyRecord(
    key_id="0123456789ab",
    merchant_id="acme",
    role=Role.MERCHANT,
    salt="00" * 16,
    secret_hash="11" * 32,
    expires_at=None,
    revoked_at=None,
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_entry_lives_for_the_ttl_then_the_ledger_is_asked_again() -> None:
    """A cached record is served until ttl seconds have passed, then it is a miss."""
    clock = Clock()
    cache = KeyCache(ttl=5.0, clock=clock)
    cache.put(RECORD.key_id, RECORD)
    clock.now += 4.9
    assert cache.get(RECORD.key_id) == RECORD
    clock.now += 0.1
    assert cache.get(RECORD.key_id) is MISSING


def test_unknown_keys_are_cached_as_unknown() -> None:
    """A key id the ledger does not know is remembered as None, not looked up per request."""
    cache = KeyCache(ttl=5.0, clock=Clock())
    cache.put("ffffffffffff", None)
    assert cache.get("ffffffffffff") is None
    assert cache.get("eeeeeeeeeeee") is MISSING


def test_zero_ttl_turns_the_cache_off() -> None:
    """PAYTIDE_API_KEY_CACHE_SECONDS=0: every request reads the ledger."""
    cache = KeyCache(ttl=0.0, clock=Clock())
    cache.put(RECORD.key_id, RECORD)
    assert cache.get(RECORD.key_id) is MISSING


async def test_concurrent_misses_share_one_load() -> None:
    """Fifty requests with one uncached key make one ledger read and all get its answer."""
    cache = KeyCache(ttl=5.0)
    loads = 0
    release = asyncio.Event()

    async def load() -> KeyRecord | None:
        nonlocal loads
        loads += 1
        await release.wait()
        return RECORD

    waiting = [asyncio.create_task(cache.lookup(RECORD.key_id, load)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [RECORD] * 50
    assert loads == 1
    assert await cache.lookup(RECORD.key_id, load) == RECORD
    assert loads == 1


async def test_a_failed_load_fails_its_waiters_and_is_not_cached() -> None:
    """A ledger error reaches every waiting request; the next request tries the ledger again."""
    cache = KeyCache(ttl=5.0)
    release = asyncio.Event()

    async def failing() -> KeyRecord | None:
        await release.wait()
        raise ConnectionError("ledger down")

    waiting = [asyncio.create_task(cache.lookup(RECORD.key_id, failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert cache.get(RECORD.key_id) is MISSING

    async def working() -> KeyRecord | None:
        return RECORD

    assert await cache.lookup(RECORD.key_id, working) == RECORD


def _other(key_id: str) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        merchant_id="acme",
        role=Role.MERCHANT,
        salt="00" * 16,
        secret_hash="11" * 32,
        expires_at=None,
        revoked_at=None,
    )


def test_ten_thousand_unknown_key_ids_do_not_evict_a_real_key() -> None:
    """Junk key ids fill only the unknown-id LRU: a real key stays cached through 10,000 of
    them (the old cache dropped everything at 10,000 entries)."""
    cache = KeyCache(ttl=5.0, clock=Clock())
    cache.put(RECORD.key_id, RECORD)
    for n in range(10_000):
        cache.put(f"{n:012x}", None)
    assert cache.get(RECORD.key_id) == RECORD
    assert cache.get(f"{9_999:012x}") is None
    assert cache.get(f"{0:012x}") is MISSING


def test_known_keys_are_evicted_least_recently_used_first() -> None:
    """Past its bound the known-key LRU drops the key used longest ago, not the whole cache."""
    cache = KeyCache(ttl=5.0, clock=Clock(), max_known=3)
    for key_id in ("a", "b", "c"):
        cache.put(key_id, _other(key_id))
    assert cache.get("a") is not MISSING  # "a" is now the most recently used
    cache.put("d", _other("d"))
    assert cache.get("b") is MISSING
    assert [cache.get(k) is not MISSING for k in ("a", "c", "d")] == [True, True, True]


def test_unknown_ids_are_evicted_least_recently_used_first_within_their_bound() -> None:
    """The unknown-id LRU keeps at most its bound, dropping the oldest id first."""
    cache = KeyCache(ttl=5.0, clock=Clock(), max_unknown=2)
    for key_id in ("x", "y", "z"):
        cache.put(key_id, None)
    assert [cache.get(k) for k in ("x", "y", "z")] == [MISSING, None, None]


def test_a_key_id_moves_between_unknown_and_known_when_the_ledger_changes_its_answer() -> None:
    """An id cached as unknown and then found (a key issued meanwhile) is known, in one place."""
    cache = KeyCache(ttl=5.0, clock=Clock())
    cache.put(RECORD.key_id, None)
    cache.put(RECORD.key_id, RECORD)
    assert cache.get(RECORD.key_id) == RECORD
    cache.put(RECORD.key_id, None)
    assert cache.get(RECORD.key_id) is None
