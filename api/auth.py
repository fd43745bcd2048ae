"""Who is calling: every request outside a short public list must carry a merchant's API key.

``ApiKeyAuth`` (ASGI middleware) checks ``Authorization: Bearer <key>`` before any route runs,
refuses a client address that failed too often (api/auth_failures.py) before its key is looked
up, applies the key's rate limit, and leaves the caller in the request scope; ``merchant_of`` is the
one place routes learn whose payments they may touch. Deny by default: a new route needs a key
unless it is added to the public list below on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth_failures import AuthFailures
from api.errors import ApiError, error_response, on_database_error
from api.rate_limit import retry_after_header
from api.state import ApiState
from ledger import merchants
from ledger.engine import transaction
from ledger.merchants import KeyRecord, KeyState
from paytide import api_keys
from paytide.api_keys import Role
from paytide.logging import get_logger

log = get_logger("paytide.api.auth")

# Probes, gateway webhooks (authenticated by the gateway's signature), the codec endpoint
# (its own optional token) and the dashboard's static page (no data; it asks for an operator
# key and sends it to /dashboard/data): nothing here reads or changes a merchant's payments.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/dashboard"})
PUBLIC_PREFIXES = ("/webhooks/", "/codec/")
# Public paths that say more to a caller with a valid key (``optional_caller``). A key sent there
# is checked like anywhere else: a wrong one is 401 and counts as a failed authentication.
OPTIONAL_KEY_PATHS = frozenset({"/readyz"})
_CALLER = "paytide.caller"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="paytide"'}

_REFUSALS = {
    KeyState.REVOKED: ("api_key_revoked", "this API key was revoked; use another key"),
    KeyState.EXPIRED: (
        "api_key_expired",
        "this API key was rotated out and its overlap window has ended; use its successor",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Caller:
    merchant_id: str
    role: Role
    key_prefix: str


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.paytide
    return state


def merchant_of(request: Request) -> str:
    """The merchant the request acts for: the owner of the API key it carries."""
    return caller_of(request).merchant_id


def caller_of(request: Request) -> Caller:
    caller = request.scope.get(_CALLER)
    if not isinstance(caller, Caller):
        # Only reachable if a route that reads its caller were added to PUBLIC_PATHS.
        raise ApiError(401, "missing_api_key", "this endpoint needs an API key", headers=_CHALLENGE)
    return caller


def optional_caller(request: Request) -> Caller | None:
    """The caller on a path of OPTIONAL_KEY_PATHS: None when no key was sent."""
    caller = request.scope.get(_CALLER)
    return caller if isinstance(caller, Caller) else None


def require_operator(request: Request) -> Caller:
    caller = caller_of(request)
    if caller.role is not Role.OPERATOR:
        raise ApiError(
            403,
            "operator_role_required",
            "this endpoint is for operators; the API key used belongs to a merchant",
        )
    return caller


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _anonymous(scope: Scope) -> bool:
    """Whether the request goes on without a key check: a public path, and no key (an absent
    or empty Authorization header) sent to a path that would use one."""
    path = scope["path"]
    if not is_public(path):
        return False
    return path not in OPTIONAL_KEY_PATHS or not Request(scope).headers.get("authorization")


class ApiKeyAuth:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _anonymous(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        failures = state_of(request).auth_failures
        host = request.client.host if request.client else None
        wait = failures.wait_for(host)
        if wait > 0:
            await _too_many_failures(failures, wait)(scope, receive, send)
            return
        try:
            caller = await authenticate(request)
        except ApiError as refused:
            if refused.status == 401 and failures.failed(host):
                log.warning("auth_failures_limited", client=host, limit=failures.limit)
            response = error_response(
                refused.status, refused.code, refused.message, headers=refused.headers
            )
            await response(scope, receive, send)
            return
        except DBAPIError as error:
            # The ledger is down and the key is not cached: 503 + Retry-After, as for any route.
            await (await on_database_error(request, error))(scope, receive, send)
            return
        scope[_CALLER] = caller
        # Each request runs in its own task, so this context is this request's alone.
        structlog.contextvars.bind_contextvars(
            merchant_id=caller.merchant_id, key_prefix=caller.key_prefix
        )
        await self.app(scope, receive, send)


def _too_many_failures(failures: AuthFailures, wait: float) -> Response:
    refused = too_many_failures(failures, wait, "API key")
    return error_response(refused.status, refused.code, refused.message, headers=refused.headers)


def too_many_failures(failures: AuthFailures, wait: float, credential: str) -> ApiError:
    """The 429 for an address that ran out of failed authentications (a wrong ``credential``)."""
    return ApiError(
        429,
        "too_many_auth_failures",
        f"too many failed authentications from this address (at most {failures.limit} per "
        f"{failures.window:g} seconds); fix the {credential}, then retry after the Retry-After "
        "delay",
        headers={"Retry-After": retry_after_header(wait)},
    )


async def authenticate(request: Request) -> Caller:
    state = state_of(request)
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(
            "missing_api_key",
            "send your API key as `Authorization: Bearer pt_..._...`",
        )
    scheme, _, token = header.partition(" ")
    parsed = api_keys.parse(token.strip()) if scheme.lower() == "bearer" else None
    if parsed is None:
        raise _unauthorized(
            "invalid_api_key", "the Authorization header does not carry a paytide API key"
        )
    record = await _record(state, parsed.key_id)
    # The secret is checked before the key's state, so only the key's holder learns that state.
    if record is None or not api_keys.matches(parsed.secret, record.salt, record.secret_hash):
        log.info("api_key_rejected", code="invalid_api_key", key_prefix=parsed.prefix)
        raise _unauthorized("invalid_api_key", "this API key is not valid")
    key_state = record.state(datetime.now(UTC))
    if key_state in _REFUSALS:
        code, message = _REFUSALS[key_state]
        log.info("api_key_rejected", code=code, key_prefix=parsed.prefix)
        raise _unauthorized(code, message)
    wait = state.limiter.wait_for(record.key_id)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests with this API key (at most {state.limiter.rate:g} per second, "
            f"bursts of {state.limiter.burst}); retry after the Retry-After delay",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return Caller(merchant_id=record.merchant_id, role=record.role, key_prefix=parsed.prefix)


async def _record(state: ApiState, key_id: str) -> KeyRecord | None:
    def read() -> KeyRecord | None:
        with transaction(state.sessions) as session:
            return merchants.find_key(session, key_id)

    async def load() -> KeyRecord | None:
        return await run_in_threadpool(read)

    return await state.keys.lookup(key_id, load)


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers=_CHALLENGE)
