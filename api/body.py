"""Reading a JSON request body with a size limit and clear errors."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError
from paytide import untrusted_json

M = TypeVar("M", bound=BaseModel)

_CODES = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "int_type": "invalid_type",
    "string_type": "invalid_type",
    "dict_type": "invalid_type",
    "model_type": "invalid_type",
    "bool_type": "invalid_type",
    "greater_than": "too_small",
    "less_than_equal": "too_large",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "string_pattern_mismatch": "invalid_format",
    "literal_error": "invalid_choice",
    "enum": "invalid_choice",
    "ip_any_address": "invalid_format",
}


async def read_bytes(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to be larger than ``max_bytes``:
    from Content-Length when declared, otherwise while streaming, before the rest is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
    except ClientDisconnect:
        # The client went, or the server cut off a body past PAYTIDE_API_BODY_TIMEOUT (it has
        # answered 408 itself): nobody reads this answer, but it is an answer, not a crash.
        raise ApiError(
            400, "body_incomplete", "the connection closed before the whole body arrived"
        ) from None
    return bytes(body)


async def read_json(request: Request, max_bytes: int) -> Any:
    return parse_json(await read_bytes(request, max_bytes))


def parse_json(body: bytes) -> Any:
    """The body as JSON; a malformed, too deeply nested or huge-numbered one is a 400 whose code
    says which (``malformed_json``, ``json_too_deep``, ``json_number_too_long``)."""
    if not body:
        raise ApiError(400, "malformed_json", "the request body is empty; send a JSON object")
    try:
        return untrusted_json.loads(body)
    except untrusted_json.UntrustedJsonError as error:
        raise ApiError(400, error.code, f"the request body is refused: {error}") from None


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {max_bytes} bytes")


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ApiError(422, "validation_failed", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(
            422,
            "validation_failed",
            "the request has invalid fields; see details",
            details=[field_error(item) for item in error.errors()],
        ) from None


def field_error(item: Any) -> dict[str, str]:
    message = str(item["msg"]).removeprefix("Value error, ")
    return {
        "field": ".".join(str(part) for part in item["loc"]) or "body",
        "code": _CODES.get(item["type"], item["type"]),
        "message": message,
    }
