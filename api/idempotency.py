"""Idempotency keys, request fingerprints and the ids derived from them.

The workflow id is ``payment:{merchant}:{key}`` (``refund:{merchant}:{key}`` for a refund); the
payment (refund) id is a hash of it. Both are functions of the merchant and the key alone, so
every retry of a request names the same payment (refund). Merchant ids never contain ``:``
(`paytide.merchant_ids`), so the first ``:`` after the kind ends the merchant: two merchants never
share a workflow id, even when a key contains ``:`` or a merchant id ends like another's key
starts (``acme`` + ``eu-order-7`` and ``acme-eu`` + ``order-7`` are two ids).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from pydantic import BaseModel

from api.errors import ApiError
from api.schemas import CreatePayment
from paytide.merchant_ids import SEPARATOR

MAX_KEY_LENGTH = 255
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def fingerprint(body: BaseModel, **context: str) -> str:
    """A hash of the validated request (and ``context``, such as the path's payment id): the
    same key with another request is caught by it."""
    fields = body.model_dump(mode="json")
    if context:
        fields = {**fields, "_context": context}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
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


def _scoped(kind: str, owner: str, key: str) -> str:
    return SEPARATOR.join((kind, owner, key))


def workflow_id(merchant_id: str, key: str) -> str:
    return _scoped("payment", merchant_id, key)


def _object_id(prefix: str, workflow: str) -> str:
    encoded = base64.b32encode(_digest(workflow)).decode().lower().rstrip("=")
    return f"{prefix}_{encoded[:26]}"


def payment_id(workflow: str) -> str:
    return _object_id("pay", workflow)


def refund_workflow_id(merchant_id: str, key: str) -> str:
    return _scoped("refund", merchant_id, key)


def refund_id(workflow: str) -> str:
    return _object_id("ref", workflow)


def dispute_workflow_id(provider: str, reference: str) -> str:
    """Keyed by the gateway's own dispute id: every webhook about it names the same workflow.
    Gateway names never contain ``:``, so one id names one gateway's dispute."""
    return _scoped("dispute", provider, reference)


def dispute_id(workflow: str) -> str:
    return _object_id("dp", workflow)
