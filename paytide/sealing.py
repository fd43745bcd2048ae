"""Sealing small secrets for the ledger with the payload key ring.

Webhook signing secrets must be usable to sign, and a customer's email to send a receipt, so
neither can be hashed; both are stored as ``key_id:base64(nonce || AES-256-GCM ciphertext)``.
The row's own id is the associated data: a sealed value copied onto another row will not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from paytide.codec import NONCE_BYTES, KeyRing, PayloadDecryptionError, PayloadKeyError


def seal(ring: KeyRing, plain: str, *, bound_to: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.current]).encrypt(nonce, plain.encode(), bound_to.encode())
    return f"{ring.current}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(ring: KeyRing, text: str, *, bound_to: str) -> str:
    key_id, sep, encoded = text.partition(":")
    if not sep:
        raise PayloadDecryptionError("sealed value has no key id")
    key = ring.keys.get(key_id)
    if key is None:
        raise PayloadKeyError(
            f"a ledger secret is sealed with key id {key_id!r}, which this process does not hold; "
            "keep that key in PAYTIDE_PAYLOAD_KEYS after the current one"
        )
    try:
        data = base64.b64decode(encoded, validate=True)
        plain = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], bound_to.encode())
        return plain.decode()
    except (binascii.Error, ValueError, InvalidTag):
        raise PayloadDecryptionError(
            f"sealed value under key id {key_id!r} does not open for {bound_to!r}"
        ) from None
