"""paytide/untrusted_json.py: hostile JSON becomes one `UntrustedJsonError` with a code, and
ordinary JSON parses exactly as ``json.loads`` parses it."""

from __future__ import annotations

import json

import pytest

from paytide.untrusted_json import MAX_DEPTH, MAX_NUMBER_CHARS, UntrustedJsonError, loads

pytestmark = pytest.mark.unit


def code_of(document: bytes | str) -> str:
    with pytest.raises(UntrustedJsonError) as refused:
        loads(document)
    return refused.value.code


def test_ordinary_documents_parse_as_json_loads_does() -> None:
    """Objects, arrays, numbers, strings with brackets, and text input come out unchanged."""
    document = '{"a": [1, -2.5e3, true, null], "b": "[[[{{{", "c": {"d": "é"}}'
    assert loads(document.encode()) == json.loads(document)
    assert loads(document) == json.loads(document)
    assert loads(b'"' + b"[" * 1000 + b'"') == "[" * 1000


def test_nesting_up_to_the_limit_parses_and_one_more_is_refused() -> None:
    """MAX_DEPTH levels of arrays or objects parse; MAX_DEPTH + 1 is json_too_deep."""
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert code_of("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)) == "json_too_deep"
    objects = '{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)
    assert code_of(objects) == "json_too_deep"


def test_nesting_past_the_interpreters_recursion_limit_is_refused() -> None:
    """100,000 nested arrays are json_too_deep, not a RecursionError."""
    assert code_of(b"[" * 100_000 + b"]" * 100_000) == "json_too_deep"


def test_number_literals_longer_than_the_limit_are_refused() -> None:
    """A 5,000-digit integer (Python's conversion limit is 4,300) is json_number_too_long."""
    assert loads("9" * MAX_NUMBER_CHARS) == int("9" * MAX_NUMBER_CHARS)
    assert code_of(b'{"amount": ' + b"9" * 5000 + b"}") == "json_number_too_long"
    assert code_of("1." + "5" * MAX_NUMBER_CHARS) == "json_number_too_long"


@pytest.mark.parametrize("document", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e999", "{"])
def test_non_json_numbers_and_syntax_errors_are_malformed(document: str) -> None:
    """NaN, Infinity, a number beyond float range and broken syntax are malformed_json."""
    assert code_of(document) == "malformed_json"


def test_undecodable_bytes_are_malformed() -> None:
    """Bytes that are no Unicode encoding are malformed_json, still a ValueError for callers."""
    with pytest.raises(ValueError, match="not valid"):
        loads(b'"\xff"')


@pytest.mark.parametrize(
    "document",
    [
        b'{"description": "gift\\ud800card"}',
        b'{"metadata": {"note": "\\udfff"}}',
        b'{"metadata": {"\\udc00": "key"}}',
        b'["\\ud83d"]',
        b'"\xed\xa0\x80"',
        '"\ud800"',
        '"\ud800"'.encode("utf-16-le", "surrogatepass"),
    ],
    ids=[
        "escaped",
        "escaped_value",
        "escaped_key",
        "high_without_low",
        "raw_utf8",
        "text",
        "utf16",
    ],
)
def test_unpaired_surrogates_are_malformed(document: bytes | str) -> None:
    """A string with an unpaired UTF-16 surrogate, escaped or raw, is malformed_json: no UTF-8
    encoder downstream (ledger, gateway SDKs) could ever write it."""
    assert code_of(document) == "malformed_json"


def test_escaped_surrogate_pairs_and_escaped_backslashes_parse() -> None:
    """A surrogate pair is one character, and an escaped backslash before "ud800" is text."""
    assert loads(b'{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001f600"}
    assert loads(b'"\\\\ud800"') == "\\ud800"
