"""Stripe-style webhook signatures: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The MAC covers ``f"{t}."`` followed by the raw body, so a receiver must verify the exact bytes it
was sent, before any JSON parsing. The timestamp is signed too, which is what makes the tolerance
window a defence against replaying an old delivery.

Used by the sandbox gateway's webhooks and by paytide's own merchant notifications. Both
functions are pure: the caller passes the clock reading in.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from gateways.base import WebhookRejected

SIGNATURE_SCHEME = "v1"


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_mac(secret, body, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # A second `t` would let an attacker choose which one we check; refuse the header.
            if timestamp is not None or not value.isdigit():
                raise WebhookRejected(
                    "malformed_signature", "signature header has a bad or repeated t= timestamp"
                )
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
        # Other schemes (v0, future ones) are ignored, as Stripe's libraries do.
    if timestamp is None:
        raise WebhookRejected("malformed_signature", "signature header has no t= timestamp")
    if not signatures:
        raise WebhookRejected(
            "malformed_signature", f"signature header has no {SIGNATURE_SCHEME}= signature"
        )
    return timestamp, signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    tolerance_seconds: float,
    now: float,
) -> None:
    """Raise `WebhookRejected` unless ``header`` signs ``body`` with one of ``secrets``.

    Several secrets are accepted so a secret can be rotated without dropping deliveries: during
    the overlap the sender may sign with either, or send one ``v1`` entry per secret.
    """
    if not secrets:
        raise ValueError("verify() needs at least one secret; check the webhook secret setting")
    if not header:
        raise WebhookRejected("missing_signature", "the request carries no signature header")
    timestamp, signatures = _parse(header)
    expected = [_mac(secret, body, timestamp) for secret in secrets]
    # Compare every pair, without stopping early, so timing says nothing about which one matched.
    matched = False
    for candidate in signatures:
        for good in expected:
            matched |= hmac.compare_digest(candidate.encode(), good.encode())
    if not matched:
        raise WebhookRejected(
            "bad_signature", "no signature matches the body with any configured secret"
        )
    # Checked after the MAC, so `stale_timestamp` only ever describes an authentic old message.
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookRejected(
            "stale_timestamp",
            f"signature timestamp is {abs(now - timestamp):.0f}s from now, "
            f"outside the {tolerance_seconds:.0f}s tolerance",
        )


def sign_all(secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    """One ``t=`` and a ``v1=`` per secret: during a rotation the receiver may hold either."""
    if not secrets:
        raise ValueError("sign_all() needs at least one secret")
    macs = ",".join(f"{SIGNATURE_SCHEME}={_mac(secret, body, timestamp)}" for secret in secrets)
    return f"t={timestamp},{macs}"
