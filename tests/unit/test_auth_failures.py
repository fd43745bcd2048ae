"""The per-address limit on failed authentication: its burst, refill, Retry-After and memory."""

from __future__ import annotations

import pytest

from api.auth_failures import AuthFailures, client_key

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_failures_pass_then_the_address_waits_for_one_to_come_back() -> None:
    """`limit` failures are answered normally; then the address waits window/limit seconds."""
    clock = Clock()
    failures = AuthFailures(limit=5, window=60.0, clock=clock)
    for _ in range(4):
        assert failures.wait_for("203.0.113.9") == 0.0
        assert failures.failed("203.0.113.9") is False
    assert failures.failed("203.0.113.9") is True
    assert failures.wait_for("203.0.113.9") == pytest.approx(12.0)
    clock.now += 12.0
    assert failures.wait_for("203.0.113.9") == 0.0
    failures.failed("203.0.113.9")
    assert failures.wait_for("203.0.113.9") == pytest.approx(12.0)


def test_successes_spend_nothing_and_other_addresses_are_not_affected() -> None:
    """Only failures count: an address under the limit is never refused, and one address's
    failures do not refuse another."""
    failures = AuthFailures(limit=2, window=60.0, clock=Clock())
    failures.failed("198.51.100.1")
    for _ in range(1000):
        assert failures.wait_for("198.51.100.1") == 0.0
    failures.failed("198.51.100.1")
    assert failures.wait_for("198.51.100.1") > 0
    assert failures.wait_for("198.51.100.2") == 0.0


def test_a_waiting_address_does_not_push_its_wait_further_out_by_asking() -> None:
    """Asking while refused spends nothing: the Retry-After it was given holds."""
    clock = Clock()
    failures = AuthFailures(limit=1, window=10.0, clock=clock)
    failures.failed("192.0.2.7")
    for _ in range(50):
        failures.wait_for("192.0.2.7")
    clock.now += 10.0
    assert failures.wait_for("192.0.2.7") == 0.0


def test_a_flood_of_distinct_addresses_stays_bounded_and_keeps_a_blocked_address() -> None:
    """100,000 addresses failing once each keep at most max_tracked suspects, and do not free
    an address that ran out of failures."""
    failures = AuthFailures(limit=3, window=60.0, clock=Clock(), max_tracked=1000)
    for _ in range(3):
        failures.failed("192.0.2.66")
    for n in range(100_000):
        failures.failed(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert failures.tracked == 1001
    assert failures.wait_for("192.0.2.66") > 0


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    """One host cannot walk through its /64; ::ffff:a.b.c.d is the IPv4 address."""
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"
    failures = AuthFailures(limit=1, window=60.0, clock=Clock())
    failures.failed("2001:db8:1:2::1")
    assert failures.wait_for("2001:db8:1:2::ffff") > 0


def test_limit_zero_turns_the_limit_off() -> None:
    """PAYTIDE_AUTH_FAILURE_LIMIT=0: failures are not counted at all."""
    failures = AuthFailures(limit=0, window=60.0, clock=Clock())
    for _ in range(100):
        assert failures.failed("192.0.2.1") is False
    assert failures.wait_for("192.0.2.1") == 0.0
