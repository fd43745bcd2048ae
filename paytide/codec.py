"""Payload encryption: what Temporal stores of a payment is ciphertext, readable only with our keys.

Every payload the SDK sends (workflow and activity inputs and results, signals, updates, queries,
memos, failure details) passes through `EncryptionCodec` on the way out and back. The codec
serializes the whole original payload (metadata included) and seals it with AES-256-GCM under the
*current* key; the stored payload names that key's id, so older keys keep decrypting what they
sealed after a rotation (docs/operations.md, "Encrypted payloads").

The wire format is the one Temporal's samples use in every SDK language: metadata
``encoding: binary/encrypted`` and ``encryption-key-id: <id>``, data ``nonce (12 bytes) ||
ciphertext+tag``, no associated data. A codec server written in another language can read it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.converter import default as default_converter

from paytide.payload_json import PaytidePayloadConverter

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per payload
KEYS_VARIABLE = "PAYTIDE_PAYLOAD_KEYS"
# A key id is stored in clear beside each payload; keep it short and boring.
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """A key set that cannot be used, or a payload sealed under a key we do not hold."""


class PayloadDecryptionError(ValueError):
    """A payload that claims to be ours but does not authenticate: tampered, truncated, or a key
    with the right id and the wrong bytes."""


@dataclass(frozen=True)
class KeyRing:
    """Keys by id; ``current`` seals new payloads, every key opens what it sealed."""

    current: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise PayloadKeyError(f"the current key id {self.current!r} is not among the keys")
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise PayloadKeyError(
                    f"key id {key_id!r} must be 1-64 characters of letters, digits, '.', '_', '-'"
                )
            if len(key) != KEY_BYTES:
                raise PayloadKeyError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256 needs exactly {KEY_BYTES}"
                )


def parse_keys(text: str, *, variable: str = KEYS_VARIABLE) -> KeyRing:
    """``kid:base64key,kid:base64key``; the first pair is current. Errors name ``variable`` and
    never echo key material."""
    pairs = [part.strip() for part in text.split(",") if part.strip()]
    if not pairs:
        raise PayloadKeyError(f"{variable} is empty; expected KEY_ID:BASE64_KEY[,KEY_ID:...]")
    keys: dict[str, bytes] = {}
    for position, pair in enumerate(pairs, start=1):
        key_id, sep, encoded = (part.strip() for part in pair.partition(":"))
        if not sep or not key_id or not encoded:
            raise PayloadKeyError(
                f"{variable}: entry {position} is not KEY_ID:BASE64_KEY "
                "(generate a key with `openssl rand -base64 32`)"
            )
        if key_id in keys:
            raise PayloadKeyError(f"{variable}: key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeyError(
                f"{variable}: the key for id {key_id!r} is not valid base64"
            ) from None
        keys[key_id] = key
    try:
        return KeyRing(current=next(iter(keys)), keys=keys)
    except PayloadKeyError as error:
        raise PayloadKeyError(f"{variable}: {error}") from None


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload, under the key ring's current key."""

    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._current = ring.current
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    @property
    def current_key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(payload) for payload in payloads]

    def _seal(self, payload: Payload) -> Payload:
        if is_encrypted(payload):
            # Already sealed (the codec endpoint can be handed ciphertext): sealing it twice
            # would only hide which key opens it.
            return payload
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._current.encode()},
            data=nonce + sealed,
        )

    def _open(self, payload: Payload) -> Payload:
        if not is_encrypted(payload):
            # Written before encryption was switched on, or by a client without the codec.
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(sorted(self._ciphers))
            raise PayloadKeyError(
                f"payload is encrypted with key id {key_id!r}, which this process does not hold "
                f"(it holds: {known}); add that key to {KEYS_VARIABLE} after the current one"
            )
        data = payload.data
        if len(data) <= NONCE_BYTES:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} is truncated ({len(data)} bytes)"
            )
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} failed authentication: it was "
                "altered, or the key under that id is not the one that sealed it"
            ) from None
        return Payload.FromString(plain)


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The SDK's converter with pydantic doing the JSON, and ``codec`` applied to every payload
    (None: plain).

    Pydantic reads and writes the same JSON as the SDK's default for our dataclasses, with one
    validator per type for the process (paytide/payload_json.py) instead of resolving every
    dataclass's type hints on each payload: that resolution was an eighth of the worker's busy
    time (docs/performance.md).

    With a codec, failure messages and stack traces move into an encoded attribute too: an error
    text can quote a customer or a gateway answer, and would otherwise be stored in clear.
    """
    converter = dataclasses.replace(
        default_converter(), payload_converter_class=PaytidePayloadConverter
    )
    if codec is None:
        return converter
    return dataclasses.replace(
        converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
