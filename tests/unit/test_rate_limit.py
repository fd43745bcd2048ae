"""The per-key token bucket: bursts, refill, independence of keys, and the Retry-After it gives."""

from __future__ import annotations

import pytest

from api.rate_limit import RateLimiter, retry_after_header

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_allowed_then_refused_with_the_wait() -> None:
    """`burst` requests pass at once; the next waits 1/rate seconds for a token."""
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait_for("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_for("k") == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate() -> None:
    """After 1/rate seconds one more request passes, and only one."""
    clock = Clock()
    limiter = RateLimiter(rate=4.0, burst=1, clock=clock)
    assert limiter.wait_for("k") == 0.0
    assert limiter.wait_for("k") > 0
    clock.now += 0.25
    assert limiter.wait_for("k") == 0.0
    assert limiter.wait_for("k") > 0


def test_refill_stops_at_the_burst() -> None:
    """A key idle for an hour gets `burst` requests, not an hour's worth."""
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=2, clock=clock)
    clock.now += 3600
    assert [limiter.wait_for("k") == 0.0 for _ in range(3)] == [True, True, False]


def test_refused_requests_do_not_spend_tokens() -> None:
    """Hammering while limited does not push the wait further out."""
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.wait_for("k")
    for _ in range(100):
        assert limiter.wait_for("k") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.wait_for("k") == 0.0


def test_keys_have_their_own_buckets() -> None:
    """One key at its limit does not slow another key down."""
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("a") > 0
    assert limiter.wait_for("b") == 0.0


@pytest.mark.parametrize(("wait", "header"), [(0.01, "1"), (0.5, "1"), (1.0, "1"), (1.2, "2")])
def test_retry_after_rounds_up_to_whole_seconds(wait: float, header: str) -> None:
    """Retry-After is whole seconds, rounded up, never 0: obeying it gets the client through."""
    assert retry_after_header(wait) == header


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    """A limiter that could never let a request through is a configuration error."""
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=rate, burst=burst)
