"""The payload codec: AES-256-GCM round trips, key rotation, refusals, and the key settings."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from paytide.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    KeyRing,
    PayloadDecryptionError,
    PayloadKeyError,
    data_converter,
    parse_keys,
)
from paytide.production_rules import DEV_PAYLOAD_KEYS
from paytide.settings import ConfigError, Environment, load_settings

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
SECRET_KEY_TEXT = base64.b64encode(b"k" * 32).decode()


@dataclass(frozen=True, kw_only=True)
class Charge:
    customer_id: str
    amount_minor: int
    currency: str


def ring(current: str, **keys: bytes) -> KeyRing:
    """A key ring from keyword arguments, the named one current."""
    return KeyRing(current=current, keys=keys)


def entry(key_id: str, key: bytes) -> str:
    """One ``KEY_ID:BASE64_KEY`` pair as PAYTIDE_PAYLOAD_KEYS spells it."""
    return f"{key_id}:{base64.b64encode(key).decode()}"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PAYTIDE_* variables and a working directory with no .env file."""
    for name in list(os.environ):
        if name.startswith("PAYTIDE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


async def test_round_trip_hides_every_byte_of_the_value() -> None:
    """A value encoded through the converter is ciphertext and decodes back to itself."""
    converter = data_converter(EncryptionCodec(ring("k1", k1=OLD_KEY)))
    charge = Charge(customer_id="cus_round_trip_42", amount_minor=123456, currency="EUR")
    [payload] = await converter.encode([charge])
    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[KEY_ID_METADATA] == b"k1"
    for clear in (b"cus_round_trip_42", b"123456", b"EUR", b"json/plain"):
        assert clear not in payload.SerializeToString()
    assert await converter.decode([payload], [Charge]) == [charge]


async def test_same_value_encrypts_differently_each_time() -> None:
    """A fresh random nonce per payload: equal inputs never give equal ciphertexts."""
    codec = EncryptionCodec(ring("k1", k1=OLD_KEY))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"same"')
    first, second = await codec.encode([plain, plain])
    assert first.data != second.data
    assert await codec.decode([first, second]) == [plain, plain]


async def test_rotation_keeps_old_payloads_readable_and_seals_with_the_new_key() -> None:
    """After a new key becomes current, old payloads still decode and new ones use the new id."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"cus_rotation"')
    [sealed_before] = await EncryptionCodec(ring("2025", **{"2025": OLD_KEY})).encode([plain])
    rotated = EncryptionCodec(ring("2026", **{"2026": NEW_KEY, "2025": OLD_KEY}))
    assert rotated.current_key_id == "2026"
    assert await rotated.decode([sealed_before]) == [plain]
    [sealed_after] = await rotated.encode([plain])
    assert sealed_after.metadata[KEY_ID_METADATA] == b"2026"
    assert await rotated.decode([sealed_after]) == [plain]


async def test_unknown_key_id_names_the_key() -> None:
    """A payload sealed under a key this process lacks fails with a message naming that key id."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    [sealed] = await EncryptionCodec(ring("retired-7", **{"retired-7": OLD_KEY})).encode([plain])
    with pytest.raises(PayloadKeyError, match=r"'retired-7'.*PAYTIDE_PAYLOAD_KEYS"):
        await EncryptionCodec(ring("k2", k2=NEW_KEY)).decode([sealed])


@pytest.mark.parametrize("position", [0, 5, 20, -1])
async def test_tampered_ciphertext_fails_authentication(position: int) -> None:
    """Flipping one bit anywhere in nonce, ciphertext or tag makes decoding fail, never misread."""
    codec = EncryptionCodec(ring("k1", k1=OLD_KEY))
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1999")])
    data = bytearray(sealed.data)
    data[position] ^= 0x01
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(data))
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([tampered])


async def test_same_key_id_with_other_bytes_fails_authentication() -> None:
    """A key id reused for different key bytes is caught by the tag, not silently misdecoded."""
    [sealed] = await EncryptionCodec(ring("k1", k1=OLD_KEY)).encode([Payload(data=b"x")])
    with pytest.raises(PayloadDecryptionError):
        await EncryptionCodec(ring("k1", k1=NEW_KEY)).decode([sealed])


async def test_truncated_payload_is_refused() -> None:
    """A sealed payload shorter than its nonce is reported as truncated."""
    codec = EncryptionCodec(ring("k1", k1=OLD_KEY))
    stub = Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k1"}, data=b"short")
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([stub])


async def test_encrypted_payloads_are_not_sealed_twice_and_plain_ones_pass_decode() -> None:
    """Encoding ciphertext returns it unchanged; decoding a plain payload returns it unchanged."""
    codec = EncryptionCodec(ring("k1", k1=OLD_KEY))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"legacy"')
    [sealed] = await codec.encode([plain])
    assert await codec.encode([sealed]) == [sealed]
    assert await codec.decode([plain]) == [plain]


async def test_failure_messages_are_encrypted_too() -> None:
    """With a codec, a failure's message is moved into an encrypted attribute."""
    converter = data_converter(EncryptionCodec(ring("k1", k1=OLD_KEY)))
    failure = Failure()
    await converter.encode_failure(ApplicationError("customer cus_secret_77 declined"), failure)
    assert b"cus_secret_77" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert "cus_secret_77" in str(decoded)


def test_plain_converter_without_codec() -> None:
    """`data_converter(None)` is the SDK's default converter, with no codec."""
    assert data_converter(None).payload_codec is None


def test_parse_keys_first_pair_is_current() -> None:
    """The first KEY_ID:BASE64_KEY pair is current; all pairs are kept for decoding."""
    parsed = parse_keys(f" {entry('new', NEW_KEY)} , {entry('old', OLD_KEY)} ")
    assert parsed.current == "new"
    assert dict(parsed.keys) == {"new": NEW_KEY, "old": OLD_KEY}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        (" , ", "is empty"),
        (SECRET_KEY_TEXT, "entry 1 is not KEY_ID:BASE64_KEY"),
        (f"k1:{SECRET_KEY_TEXT},k2", "entry 2 is not KEY_ID:BASE64_KEY"),
        ("k1:not*base64!", "not valid base64"),
        (entry("k1", b"short"), "5 bytes; AES-256 needs exactly 32"),
        (f"{entry('k1', OLD_KEY)},{entry('k1', NEW_KEY)}", "appears twice"),
        (entry("bad id", OLD_KEY), "must be 1-64 characters"),
    ],
)
def test_parse_keys_errors_name_the_variable(text: str, fragment: str) -> None:
    """Each malformed key list is refused with the variable's name and what is wrong."""
    with pytest.raises(PayloadKeyError) as caught:
        parse_keys(text)
    assert "PAYTIDE_PAYLOAD_KEYS" in str(caught.value)
    assert fragment in str(caught.value)


def test_development_without_keys_uses_the_dev_key() -> None:
    """With nothing configured in development, the fixed development key is current."""
    settings = load_settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.payload_keys is None
    assert settings.payload_key_ring == parse_keys(DEV_PAYLOAD_KEYS)


def test_configured_keys_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """PAYTIDE_PAYLOAD_KEYS is read, and its first key is the current one."""
    monkeypatch.setenv("PAYTIDE_PAYLOAD_KEYS", f"{entry('b', NEW_KEY)},{entry('a', OLD_KEY)}")
    assert load_settings().payload_key_ring.current == "b"


def test_production_requires_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """In production, an unset PAYTIDE_PAYLOAD_KEYS stops start-up with a message naming it."""
    monkeypatch.setenv("PAYTIDE_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="PAYTIDE_PAYLOAD_KEYS: required in production"):
        load_settings()


def test_production_refuses_the_dev_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public development key is never accepted in production, even among others."""
    monkeypatch.setenv("PAYTIDE_ENVIRONMENT", "production")
    monkeypatch.setenv("PAYTIDE_PAYLOAD_KEYS", f"{entry('p1', NEW_KEY)},{DEV_PAYLOAD_KEYS}")
    with pytest.raises(ConfigError, match="public development key"):
        load_settings()


def test_bad_keys_in_settings_name_the_variable_and_hide_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed PAYTIDE_PAYLOAD_KEYS fails start-up naming the variable, without echoing it."""
    monkeypatch.setenv("PAYTIDE_PAYLOAD_KEYS", f"k1:{SECRET_KEY_TEXT[:-4]}")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "PAYTIDE_PAYLOAD_KEYS" in message
    assert SECRET_KEY_TEXT[:-4] not in message


@pytest.mark.parametrize("origin", ["*", "http://ui.example.com/path", "ui.example.com"])
def test_codec_origins_must_be_plain_origins(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    """PAYTIDE_CODEC_CORS_ORIGINS accepts scheme://host[:port] only: no wildcard, no path."""
    monkeypatch.setenv("PAYTIDE_CODEC_CORS_ORIGINS", origin)
    with pytest.raises(ConfigError, match="PAYTIDE_CODEC_CORS_ORIGINS"):
        load_settings()


def test_development_allows_the_local_ui_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """In development the local Web UI's origin follows PAYTIDE_TEMPORAL_UI_PORT."""
    monkeypatch.setenv("PAYTIDE_TEMPORAL_UI_PORT", "18233")
    origins = load_settings().codec_cors_origin_list
    assert "http://127.0.0.1:18233" in origins
    assert "http://localhost:8233" in origins


def test_empty_codec_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty PAYTIDE_CODEC_AUTH_TOKEN is an error, not an endpoint that accepts 'Bearer '."""
    monkeypatch.setenv("PAYTIDE_CODEC_AUTH_TOKEN", "")
    with pytest.raises(ConfigError, match="PAYTIDE_CODEC_AUTH_TOKEN"):
        load_settings()
