"""One error shape everywhere: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from paytide.logging import get_logger

log = get_logger("paytide.api")

# Seconds a client is asked to wait before retrying while the ledger database is unreachable.
LEDGER_RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


async def on_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # The client gets a stable shape and no internals; the log gets the whole story.
    log.exception("request_failed", path=request.url.path, error_type=type(exc).__name__)
    return error_response(
        500,
        "internal_error",
        "paytide hit an unexpected error; it was logged. Retry with the "
        "same Idempotency-Key: no payment is charged twice.",
    )


async def on_database_error(request: Request, exc: Exception) -> Response:
    """The ledger database is unreachable: 503 with Retry-After, because a retry will work.

    Only connection trouble qualifies (``OperationalError``: refused, terminated, not accepting
    connections, SQLite busy; or a connection the pool found dead). Any other database error is
    our bug and stays a 500.
    """
    assert isinstance(exc, DBAPIError)
    if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
        return await on_unexpected(request, exc)
    log.warning("ledger_unavailable", path=request.url.path, error=str(exc.orig).strip()[:200])
    return error_response(
        503,
        "ledger_unavailable",
        "the payment ledger is unreachable for the moment; retry after the Retry-After delay "
        "with the same Idempotency-Key: no payment is charged twice.",
        headers={"Retry-After": str(LEDGER_RETRY_AFTER_SECONDS)},
    )
