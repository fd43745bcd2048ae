"""Merchant API keys: their text form, how a key is parsed, and the salted hash the ledger keeps.

A key reads ``pt_<mode>_<key id>_<secret>``. The key id is public (it names the key in listings and
finds its row in one indexed read); the secret is 256 random bits and is shown once, when the key
is issued. The ledger keeps only a per-key salt and HMAC-SHA256(salt, secret).

A fast hash is enough here, unlike for passwords: a password is guessable, so its hash must be
slow to stop a dictionary attack on a stolen table; 256 random bits cannot be guessed at any speed.
docs/decisions.md says more.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_ID_BYTES = 6
SECRET_BYTES = 32
SALT_BYTES = 16
# Whole-key shape: strict, so a malformed header never reaches the ledger.
_KEY = re.compile(r"pt_(live|test)_([0-9a-f]{12})_([0-9a-f]{64})")


class Role(StrEnum):
    MERCHANT = "merchant"
    OPERATOR = "operator"


class KeyMode(StrEnum):
    """Printed in the key so a person can tell a production key from a development one."""

    LIVE = "live"
    TEST = "test"


@dataclass(frozen=True, kw_only=True)
class ParsedKey:
    mode: KeyMode
    key_id: str
    secret: str = ""

    @property
    def prefix(self) -> str:
        """The public part: safe to list, log and show in a support ticket."""
        return f"pt_{self.mode.value}_{self.key_id}"

    def __repr__(self) -> str:
        # A repr that prints the secret would put it into any log line or traceback that shows us.
        return f"ParsedKey(prefix={self.prefix!r})"


@dataclass(frozen=True, kw_only=True)
class IssuedKey:
    """A freshly generated key: the full text for the person, the hash for the ledger."""

    key: ParsedKey
    salt: str
    secret_hash: str

    @property
    def text(self) -> str:
        return f"{self.key.prefix}_{self.key.secret}"

    def __repr__(self) -> str:
        return f"IssuedKey(prefix={self.key.prefix!r})"


def parse(text: str) -> ParsedKey | None:
    """The key in ``text``, or None when it is not shaped like a paytide key."""
    match = _KEY.fullmatch(text)
    if match is None:
        return None
    mode, key_id, secret = match.groups()
    return ParsedKey(mode=KeyMode(mode), key_id=key_id, secret=secret)


def hash_secret(secret: str, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def matches(secret: str, salt: str, secret_hash: str) -> bool:
    """Whether ``secret`` is the one hashed; the comparison takes the same time either way."""
    return hmac.compare_digest(hash_secret(secret, salt), secret_hash)


def generate(mode: KeyMode) -> IssuedKey:
    key = ParsedKey(
        mode=mode, key_id=secrets.token_hex(KEY_ID_BYTES), secret=secrets.token_hex(SECRET_BYTES)
    )
    salt = secrets.token_hex(SALT_BYTES)
    return IssuedKey(key=key, salt=salt, secret_hash=hash_secret(key.secret, salt))
