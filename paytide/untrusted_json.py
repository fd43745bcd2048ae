"""JSON from senders we do not trust (request bodies, gateway webhooks), parsed within bounds.

``json.loads`` alone turns two small hostile bodies into crashes instead of answers: an integer
of a few thousand digits (``ValueError`` from Python's integer string conversion limit) and a
document of deep nesting (``RecursionError``). Here both, the non-standard constants
``NaN``/``Infinity``, and strings that are not Unicode text (an unpaired UTF-16 surrogate such as
``"\ud800"``, escaped or raw, which ``json.loads`` lets through and every later UTF-8 encoder,
the ledger's and the gateways' SDKs', refuses) become one `UntrustedJsonError`, a ``ValueError``
whose ``code`` says which rule the document broke, so every caller can answer 400 instead of 500
or a payment that fails later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Containers inside containers. paytide's own bodies need 4 (codec payloads), gateway events
# about 10 (a Stripe PaymentIntent's card checks).
MAX_DEPTH = 32
# Characters of one number literal. Amounts and timestamps need under 20.
MAX_NUMBER_CHARS = 64
# An escape that may stand for a surrogate; only a document with one needs its strings checked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class UntrustedJsonError(ValueError):
    """A document we refuse to parse; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def loads(document: bytes | str) -> Any:
    """Parse ``document`` (UTF-8/16/32 bytes or text), refusing nesting deeper than
    `MAX_DEPTH`, number literals longer than `MAX_NUMBER_CHARS`, NaN/Infinity and strings with
    an unpaired surrogate."""
    try:
        text = _text(document)
        value = json.loads(text, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise _too_deep() from None
    except (json.JSONDecodeError, UnicodeError) as error:
        raise UntrustedJsonError("malformed_json", f"the JSON is not valid: {error}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text):
        _check_text(value)
    return value


def _text(document: bytes | str) -> str:
    """The document as text, strictly: json.loads would decode raw surrogates in bytes
    ("surrogatepass") and take them in text."""
    if isinstance(document, str):
        document.encode("utf-8")  # UnicodeEncodeError on an unpaired surrogate
        return document
    return document.decode(json.detect_encoding(document))


def _check_text(value: Any) -> None:
    """Every key and string of ``value`` is Unicode text: no unpaired surrogate."""
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise UntrustedJsonError(
                    "malformed_json",
                    "the JSON has a string with an unpaired UTF-16 surrogate (such as \\ud800), "
                    "which is not Unicode text; send UTF-8 text",
                ) from None


def _check_depth(value: Any) -> None:
    # Iterative, so a document just under the interpreter's recursion limit cannot crash us.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _too_deep()
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children)


def _too_deep() -> UntrustedJsonError:
    return UntrustedJsonError(
        "json_too_deep",
        f"the JSON nests arrays and objects more than {MAX_DEPTH} levels deep; send a flatter "
        "document",
    )


def _number_checked(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise UntrustedJsonError(
            "json_number_too_long",
            f"a JSON number has {len(text)} characters, more than the {MAX_NUMBER_CHARS} "
            "allowed; send amounts as integers of minor units",
        )
    return text


def _integer(text: str) -> int:
    return int(_number_checked(text))


def _float(text: str) -> float:
    value = float(_number_checked(text))
    if not math.isfinite(value):
        raise UntrustedJsonError(
            "malformed_json", f"the JSON number {text} is too large for a finite number"
        )
    return value


def _constant(name: str) -> Any:
    raise UntrustedJsonError(
        "malformed_json", f"the JSON has {name}, which JSON does not allow (RFC 8259)"
    )
