"""API keys: their text form, parsing, the salted hash the ledger keeps, and key states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.merchants import KeyState, state_of
from paytide import api_keys
from paytide.api_keys import KeyMode

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_generated_key_parses_back_to_its_parts() -> None:
    """A generated key's text parses to the same mode, key id and secret."""
    issued = api_keys.generate(KeyMode.LIVE)
    parsed = api_keys.parse(issued.text)
    assert parsed == issued.key
    assert issued.text.startswith(f"pt_live_{issued.key.key_id}_")
    assert issued.key.prefix == f"pt_live_{issued.key.key_id}"


def test_secret_has_256_bits_and_keys_differ() -> None:
    """Each key carries a 64-hex-digit (256-bit) secret, and no two keys share an id or secret."""
    keys = [api_keys.generate(KeyMode.TEST).key for _ in range(50)]
    assert all(len(key.secret) == 64 for key in keys)
    assert len({key.key_id for key in keys}) == 50
    assert len({key.secret for key in keys}) == 50


def test_hash_verifies_the_secret_and_nothing_else() -> None:
    """The stored hash matches the key's secret and refuses a secret one digit off."""
    issued = api_keys.generate(KeyMode.TEST)
    assert api_keys.matches(issued.key.secret, issued.salt, issued.secret_hash)
    off = issued.key.secret[:-1] + ("0" if issued.key.secret[-1] != "0" else "1")
    assert not api_keys.matches(off, issued.salt, issued.secret_hash)


def test_salt_makes_equal_secrets_hash_differently() -> None:
    """Two salts give two hashes of one secret, so equal secrets are not visible in the table."""
    secret = "ab" * 32
    assert api_keys.hash_secret(secret, "00" * 16) != api_keys.hash_secret(secret, "11" * 16)


def test_hash_is_not_the_secret() -> None:
    """What the ledger keeps (salt and hash) does not contain the secret."""
    issued = api_keys.generate(KeyMode.TEST)
    assert issued.key.secret not in issued.salt + issued.secret_hash


def test_repr_never_shows_the_secret() -> None:
    """repr() of a key, as a log line or traceback would print it, shows the prefix only."""
    issued = api_keys.generate(KeyMode.TEST)
    for shown in (repr(issued), repr(issued.key), str(issued.key)):
        assert issued.key.secret not in shown
        assert issued.key.prefix in shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pt_live_",
        "sk_live_0123456789ab_" + "a" * 64,
        "pt_prod_0123456789ab_" + "a" * 64,
        "pt_live_0123456789ab_" + "a" * 63,
        "pt_live_0123456789ab_" + "a" * 65,
        "pt_live_0123456789AB_" + "a" * 64,
        "pt_live_0123456789a_" + "a" * 64,
        "pt_live_0123456789ab_" + "g" * 64,
        " pt_live_0123456789ab_" + "a" * 64,
        "pt_live_0123456789ab_" + "a" * 64 + "\n",
    ],
)
def test_malformed_keys_do_not_parse(text: str) -> None:
    """Anything but pt_<live|test>_<12 hex>_<64 hex> is refused before the ledger is asked."""
    assert api_keys.parse(text) is None


def test_key_states_follow_rotation_and_revocation() -> None:
    """No expiry: active; expiry ahead: expiring; expiry passed: expired; revoked wins."""
    later, earlier = NOW + timedelta(hours=1), NOW - timedelta(seconds=1)
    assert state_of(None, None, NOW) is KeyState.ACTIVE
    assert state_of(later, None, NOW) is KeyState.EXPIRING
    assert state_of(earlier, None, NOW) is KeyState.EXPIRED
    assert state_of(NOW, None, NOW) is KeyState.EXPIRED
    assert state_of(later, earlier, NOW) is KeyState.REVOKED
    assert state_of(None, earlier, NOW) is KeyState.REVOKED


def test_naive_times_from_sqlite_are_read_as_utc() -> None:
    """SQLite returns naive datetimes; they are compared as the UTC times they were written."""
    naive_later = (NOW + timedelta(minutes=5)).replace(tzinfo=None)
    assert state_of(naive_later, None, NOW) is KeyState.EXPIRING
