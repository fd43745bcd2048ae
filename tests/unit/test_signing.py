"""Webhook signatures: what `gateways.signing.verify` accepts and how it rejects the rest."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateways.base import WebhookRejected
from gateways.signing import sign, sign_all, verify

pytestmark = pytest.mark.unit

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
BODY = b'{"id":"evt_1","type":"charge.succeeded"}'
NOW = 1_700_000_000
TOLERANCE = 300.0


def rejection(header: str | None, body: bytes = BODY) -> str:
    """The reason code `verify` gives for refusing ``header`` over ``body`` at NOW."""
    with pytest.raises(WebhookRejected) as caught:
        verify(header, body, [SECRET], TOLERANCE, NOW)
    return caught.value.reason


def test_sign_matches_the_documented_scheme() -> None:
    """The header is t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>, as Stripe's is."""
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


def test_round_trip_verifies() -> None:
    """A body signed with the secret verifies with the same secret."""
    verify(sign(SECRET, BODY, NOW), BODY, [SECRET], TOLERANCE, NOW + 10)


def test_tampered_body_is_rejected() -> None:
    """Changing one byte of the body breaks the signature."""
    header = sign(SECRET, BODY, NOW)
    assert rejection(header, BODY.replace(b"succeeded", b"succeedeD")) == "bad_signature"


def test_wrong_secret_is_rejected() -> None:
    """A signature made with another secret does not verify."""
    assert rejection(sign("whsec_attacker", BODY, NOW)) == "bad_signature"


def test_moved_timestamp_is_rejected() -> None:
    """The timestamp is signed: rewriting t= to look fresh breaks the signature."""
    mac = sign(SECRET, BODY, NOW - 3600).split("v1=")[1]
    assert rejection(f"t={NOW},v1={mac}") == "bad_signature"


@pytest.mark.parametrize("offset", [-TOLERANCE - 1, TOLERANCE + 1])
def test_timestamp_outside_tolerance_is_stale(offset: float) -> None:
    """An authentic signature older (or further in the future) than the tolerance is refused."""
    assert rejection(sign(SECRET, BODY, int(NOW + offset))) == "stale_timestamp"


def test_timestamp_at_the_edge_of_tolerance_is_accepted() -> None:
    """Exactly `tolerance_seconds` old still verifies."""
    verify(sign(SECRET, BODY, NOW), BODY, [SECRET], TOLERANCE, NOW + TOLERANCE)


def test_rotation_accepts_any_configured_secret() -> None:
    """During a rotation, a body signed with the old or the new secret verifies."""
    for secret in (SECRET, OLD_SECRET):
        verify(sign(secret, BODY, NOW), BODY, [SECRET, OLD_SECRET], TOLERANCE, NOW)


def test_any_of_several_v1_entries_may_match() -> None:
    """A header with one v1 per secret verifies when any entry matches."""
    old = sign(OLD_SECRET, BODY, NOW).split("v1=")[1]
    new = sign(SECRET, BODY, NOW).split("v1=")[1]
    verify(f"t={NOW},v1={old},v1={new}", BODY, [SECRET], TOLERANCE, NOW)


def test_other_schemes_are_ignored() -> None:
    """A v0 entry next to a valid v1 does not disturb verification."""
    verify(f"{sign(SECRET, BODY, NOW)},v0=deadbeef", BODY, [SECRET], TOLERANCE, NOW)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_is_rejected(header: str | None) -> None:
    """No header at all is `missing_signature`."""
    assert rejection(header) == "missing_signature"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=abcdef",
        f"t={NOW}",
        "t=yesterday,v1=abc",
        f"t={NOW},t={NOW - 1},v1=abc",
        f"t=-{NOW},v1=abc",
    ],
)
def test_malformed_header_is_rejected(header: str) -> None:
    """A header without one numeric t= and at least one v1= is `malformed_signature`."""
    assert rejection(header) == "malformed_signature"


def test_no_secrets_is_a_configuration_error() -> None:
    """Verifying against an empty secret list is our bug, not a rejected webhook."""
    with pytest.raises(ValueError, match="at least one secret"):
        verify(sign(SECRET, BODY, NOW), BODY, [], TOLERANCE, NOW)


def test_sign_all_carries_one_v1_per_secret_each_verifiable_alone() -> None:
    """During a rotation the header holds a v1 per secret over one timestamp: a receiver with
    only the old secret and one with only the new both verify; a third secret does not."""
    header = sign_all([SECRET, OLD_SECRET], BODY, NOW)
    assert header.startswith(f"t={NOW},v1=")
    assert header.count("v1=") == 2
    verify(header, BODY, [SECRET], TOLERANCE, NOW)
    verify(header, BODY, [OLD_SECRET], TOLERANCE, NOW)
    with pytest.raises(WebhookRejected):
        verify(header, BODY, ["whsec_other"], TOLERANCE, NOW)
