"""Refuses a request whose path or query carries a character free text may not hold.

Path ids and query values reach ledger lookups as text, so the rule of ``paytide/text.py`` holds
for them as for body fields: a NUL in ``/payments/pay_%00`` is a 400 ``invalid_characters``
before any route runs, never a ledger error (PostgreSQL refuses NUL in text) or a 500.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from paytide.text import RULE, refused_character


class RequestTargetText:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _problem(scope)
            if problem is not None:
                await error_response(400, "invalid_characters", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _problem(scope: Scope) -> str | None:
    found = refused_character(scope["path"])
    if found is not None:
        return f"the path holds {found}: {RULE}"
    query = scope.get("query_string", b"").decode("utf-8", "surrogateescape")
    for name, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
        found = refused_character(name) or refused_character(value)
        if found is not None:
            return f"query parameter {_printable(name)!r} holds {found}: {RULE}"
    return None


def _printable(name: str) -> str:
    return "".join(ch if refused_character(ch) is None else "?" for ch in name)[:40]
