"""``POST /codec/encode`` and ``/codec/decode``: Temporal's remote codec protocol, for the Web UI
and the ``temporal`` CLI.

Both take and return proto3 JSON ``{"payloads": [{"metadata": {...}, "data": "..."}]}`` (bytes as
base64) and run the payloads through the same `EncryptionCodec` as the worker. The browser calls
these cross-origin from the UI's page, so each answer carries CORS headers for the configured UI
origins, with credentials allowed; any other origin is refused outright. The UI says which
namespace it is showing in ``X-Namespace``; this endpoint serves paytide's namespace only.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.api.common.v1 import Payload

from api.auth import state_of, too_many_failures
from api.body import read_json
from api.errors import ApiError
from paytide.codec import EncryptionCodec, PayloadDecryptionError, PayloadKeyError
from paytide.logging import get_logger
from paytide.settings import Settings

log = get_logger("paytide.api.codec")
# Larger than the API's request limit: the UI may send a whole event's payloads at once.
MAX_CODEC_BODY_BYTES = 4 * 1024 * 1024
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
PREFLIGHT_MAX_AGE_SECONDS = 600

Transform = Callable[[EncryptionCodec, Sequence[Payload]], Awaitable[list[Payload]]]


async def encode_payloads(request: Request) -> Response:
    """``POST /codec/encode`` (and its ``OPTIONS`` preflight)."""
    if request.method == "OPTIONS":
        return _preflight(request)
    return await _apply(request, "encode", lambda codec, payloads: codec.encode(payloads))


async def decode_payloads(request: Request) -> Response:
    """``POST /codec/decode`` (and its ``OPTIONS`` preflight)."""
    if request.method == "OPTIONS":
        return _preflight(request)
    return await _apply(request, "decode", lambda codec, payloads: codec.decode(payloads))


def _preflight(request: Request) -> Response:
    """Answer the browser's CORS preflight; it carries no credentials, so no auth check here."""
    settings = state_of(request).settings
    cors = _cors_headers(request, settings)
    method = request.headers.get("access-control-request-method", "POST").upper()
    if method != "POST":
        raise ApiError(
            405, "method_not_allowed", "the codec endpoints accept POST only", headers=cors
        )
    return Response(
        status_code=204,
        headers={
            **cors,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
        },
    )


async def _apply(request: Request, action: str, transform: Transform) -> Response:
    settings = state_of(request).settings
    cors = _cors_headers(request, settings)
    _check_token(request, settings, cors)
    namespace = request.headers.get("x-namespace")
    if namespace is not None and namespace != settings.temporal_namespace:
        raise ApiError(
            403,
            "wrong_namespace",
            f"this codec serves namespace {settings.temporal_namespace!r}, not {namespace!r}",
            headers=cors,
        )
    payloads = _parse(await _read(request, cors), cors)
    codec = EncryptionCodec(settings.payload_key_ring)
    result: list[Payload] = []
    for index, payload in enumerate(payloads):
        try:
            result.extend(await transform(codec, [payload]))
        except (PayloadKeyError, PayloadDecryptionError) as error:
            log.warning("codec_payload_rejected", action=action, index=index, reason=str(error))
            raise ApiError(
                400, "payload_undecodable", str(error), details={"index": index}, headers=cors
            ) from None
    log.debug("codec_applied", action=action, payloads=len(result), namespace=namespace)
    body = {"payloads": [json_format.MessageToDict(payload) for payload in result]}
    return JSONResponse(body, headers=cors)


def _cors_headers(request: Request, settings: Settings) -> dict[str, str]:
    """CORS headers for an allowed browser origin; no Origin (CLI, curl) needs none."""
    origin = request.headers.get("origin")
    if origin is None:
        return {}
    if origin not in settings.codec_cors_origin_list:
        raise ApiError(
            403,
            "origin_not_allowed",
            f"origin {origin!r} may not use the codec endpoint; add it to "
            "PAYTIDE_CODEC_CORS_ORIGINS if it is your Temporal Web UI",
            headers={"Vary": "Origin"},
        )
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _check_token(request: Request, settings: Settings, cors: dict[str, str]) -> None:
    """The token is checked like an API key: a wrong one counts against the address's failed
    authentications (api/auth_failures.py), and an address that ran out is refused before its
    token is compared, so the token cannot be guessed at the network's speed."""
    if settings.codec_auth_token is None:
        return
    failures = state_of(request).auth_failures
    host = request.client.host if request.client else None
    wait = failures.wait_for(host)
    if wait > 0:
        refused = too_many_failures(failures, wait, "codec token")
        refused.headers = {**(refused.headers or {}), **cors}
        raise refused
    expected = f"Bearer {settings.codec_auth_token.get_secret_value()}".encode()
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        if failures.failed(host):
            log.warning("auth_failures_limited", client=host, limit=failures.limit)
        raise ApiError(
            401,
            "unauthorized",
            "the codec endpoint needs `Authorization: Bearer <PAYTIDE_CODEC_AUTH_TOKEN>`",
            headers={**cors, "WWW-Authenticate": "Bearer"},
        )


async def _read(request: Request, cors: dict[str, str]) -> Any:
    try:
        return await read_json(request, MAX_CODEC_BODY_BYTES)
    except ApiError as error:
        # The browser shows the UI nothing of an answer without CORS headers, not even the error.
        error.headers = {**(error.headers or {}), **cors}
        raise


def _parse(data: Any, cors: dict[str, str]) -> list[Payload]:
    def invalid(message: str) -> ApiError:
        return ApiError(400, "invalid_payloads", message, headers=cors)

    if not isinstance(data, dict):
        raise invalid('expected a JSON object {"payloads": [...]}')
    # proto3 JSON leaves out an empty list: the CLI sends `{}` for a query without arguments.
    items = data.get("payloads", [])
    if not isinstance(items, list):
        raise invalid('"payloads" must be a list of payloads')
    payloads: list[Payload] = []
    for index, item in enumerate(items):
        try:
            payloads.append(json_format.ParseDict(item, Payload()))
        except (json_format.ParseError, TypeError, ValueError) as error:
            raise ApiError(
                400,
                "invalid_payloads",
                f"payload {index} is not a Temporal Payload in proto3 JSON "
                f"(metadata values and data are base64): {error}",
                details={"index": index},
                headers=cors,
            ) from None
    return payloads
