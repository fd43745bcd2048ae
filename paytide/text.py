"""Which characters free text may hold: one rule for every input a person or program gives us.

Free text (descriptions, reasons, names, ids, metadata) ends up in the ledger, in Temporal
payloads, in log lines, in email receipts and in the dashboard. Refused everywhere:

- C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls (U+0080-U+009F): PostgreSQL refuses
  NUL in text, and the others forge log lines, split email headers or hide text on a terminal.
  Tab, CR and LF are C0 too and are refused even in long text: no paytide field is shown as
  multi-line, every one of them is copied into one-line places (a log line, a receipt, a table
  cell), and structure belongs in ``metadata``.
- U+2028 and U+2029 (line and paragraph separators): line breaks to JavaScript, to many log
  viewers and editors, so the same reasons as LF apply.
- Unpaired surrogates (U+D800-U+DFFF): JSON's ``\\ud800`` escape can carry one, but it has no
  UTF-8 form, so the ledger, Temporal's JSON and SMTP would each fail on it later.
"""

from __future__ import annotations

import re

REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
RULE = (
    "text must not contain control characters (tabs and line breaks included), "
    "U+2028/U+2029 or lone surrogates"
)


def refused_character(text: str) -> str | None:
    """A description of the first character ``text`` may not hold (``U+0000 at position 3``),
    or None when every character is allowed."""
    found = REFUSED.search(text)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start()}"
