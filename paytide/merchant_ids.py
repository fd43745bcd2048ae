"""What a merchant id may be.

A merchant id is the first part of every workflow id the API derives
(``payment:{merchant}:{key}``, ``refund:{merchant}:{key}``), so it may never contain the ``:``
separator: then the first ``:`` after the prefix ends the merchant id, and two merchants can never
spell the same workflow id, whatever their idempotency keys hold. The rule is checked wherever a
merchant comes to exist (`ledger.merchants`, ``PAYTIDE_DEFAULT_MERCHANT``).
"""

from __future__ import annotations

import re

# Workflow ids are ``{kind}{SEPARATOR}{merchant}{SEPARATOR}{key}``; PATTERN never matches it.
SEPARATOR = ":"
PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
RULE = (
    "1 to 40 characters: lower-case letters, digits, '_' and '-', starting with a letter or "
    f"digit (never {SEPARATOR!r}, which separates the merchant from the key in workflow ids)"
)


def problem_with(merchant_id: str) -> str | None:
    """Why ``merchant_id`` cannot be a merchant's id, for a person; None when it can."""
    if PATTERN.fullmatch(merchant_id):
        return None
    return f"merchant id {merchant_id!r} is not usable: {RULE}"
