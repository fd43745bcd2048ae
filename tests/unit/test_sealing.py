"""Ledger secrets sealed with the payload key ring (paytide/sealing.py)."""

from __future__ import annotations

import base64

import pytest

from paytide.codec import KeyRing, PayloadDecryptionError, PayloadKeyError
from paytide.sealing import seal, unseal

pytestmark = pytest.mark.unit

OLD = KeyRing(current="k1", keys={"k1": b"\x01" * 32})
ROTATED = KeyRing(current="k2", keys={"k2": b"\x02" * 32, "k1": b"\x01" * 32})


def test_sealed_text_opens_only_for_its_row_and_never_shows_the_secret() -> None:
    """The sealed form hides the secret; it opens for the row it was sealed for, not another."""
    sealed = seal(OLD, "whsec_abc", bound_to="we_1")
    assert "whsec_abc" not in sealed
    assert "whsec_abc" not in base64.b64decode(sealed.split(":", 1)[1]).decode(errors="replace")
    assert unseal(OLD, sealed, bound_to="we_1") == "whsec_abc"
    with pytest.raises(PayloadDecryptionError):
        unseal(OLD, sealed, bound_to="we_2")


def test_an_older_key_still_opens_after_rotation_and_a_missing_key_is_named() -> None:
    """A value sealed under k1 opens with a ring whose current key is k2; a ring without k1
    says which key id it lacks."""
    sealed = seal(OLD, "ana@example.com", bound_to="pay_1")
    assert unseal(ROTATED, sealed, bound_to="pay_1") == "ana@example.com"
    assert seal(ROTATED, "x", bound_to="pay_1").startswith("k2:")
    with pytest.raises(PayloadKeyError, match="'k1'"):
        unseal(KeyRing(current="k2", keys={"k2": b"\x02" * 32}), sealed, bound_to="pay_1")
