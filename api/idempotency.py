"""Idempotency keys, request fingerprints and the ids derived from them.

The workflow id is ``payment-{merchant}-{key}``; the payment id is a hash of it. Both are
functions of the key alone, so every retry of a request names the same payment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from api.errors import ApiError
from api.schemas import CreatePayment

MAX_KEY_LENGTH = 255
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def fingerprint(body: CreatePayment) -> str:
    """A hash of the validated request: the same key with another body is caught by it."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return _digest(canonical).hex()


def derived_key(merchant_id: str, body: CreatePayment) -> str:
    """The seed's rule without an Idempotency-Key: merchant, order, amount, currency, customer."""
    parts = [merchant_id, body.order_id, str(body.amount), body.currency, body.customer_id]
    return "derived-" + _digest("\x1f".join(parts)).hex()[:40]


def checked_key(header: str | None) -> str | None:
    if header is None:
        return None
    if not _KEY.match(header):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
        )
    return header


def workflow_id(merchant_id: str, key: str) -> str:
    return f"payment-{merchant_id}-{key}"


def payment_id(workflow: str) -> str:
    encoded = base64.b32encode(_digest(workflow)).decode().lower().rstrip("=")
    return f"pay_{encoded[:26]}"
