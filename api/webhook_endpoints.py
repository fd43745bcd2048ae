"""``/webhook-endpoints``: a merchant's URLs for signed events. The signing secret is in the
answer of the create and rotate calls only; the ledger holds it sealed. A URL whose host is not
public (paytide/outbound.py) is refused when it is registered, changed or re-enabled."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import merchant_of, state_of
from api.body import read_json, validate
from api.errors import ApiError
from api.schemas import CreateWebhookEndpoint, UpdateWebhookEndpoint
from api.state import ApiState
from ledger import webhook_endpoints as ledger
from ledger.engine import transaction
from paytide.logging import get_logger
from paytide.outbound import Refusal, TargetRefused, check_url
from paytide.settings import Environment

log = get_logger("paytide.api.webhook_endpoints")
# Ids are ours (we_ + hex): anything else is unknown without asking the database, which might
# refuse the text (PostgreSQL and NUL).
ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{1,37}$")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def public_endpoint(view: ledger.EndpointView, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": view.id,
        "object": "webhook_endpoint",
        "url": view.url,
        "events": view.events,
        "status": view.status,
        "description": view.description,
        "previous_secret_expires_at": _iso(view.previous_secret_expires_at),
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _endpoint_id(request: Request) -> str:
    endpoint_id: str = request.path_params["endpoint_id"]
    if not ENDPOINT_ID.match(endpoint_id):
        raise _not_found(endpoint_id)
    return endpoint_id


def _not_found(endpoint_id: str) -> ApiError:
    return ApiError(404, "webhook_endpoint_not_found", f"no webhook endpoint {endpoint_id!r}")


_RANGES = "loopback, private, link-local, shared, multicast or reserved"


async def _check_target(state: ApiState, url: str) -> None:
    """422 ``webhook_url_forbidden`` unless every address of the URL's host is public."""
    try:
        await check_url(url, state.settings.webhook_target_policy, state.resolver)
    except TargetRefused as refused:
        raise _forbidden(state, refused) from None


def _forbidden(state: ApiState, refused: TargetRefused) -> ApiError:
    development = state.settings.environment is Environment.DEVELOPMENT
    reason: Refusal | None = refused.refusal
    if refused.refusal is Refusal.SCHEME:
        message = "url must be an https URL (http is accepted in development only)"
    elif refused.refusal is Refusal.MALFORMED:
        message = "url must name a host, without user or password"
    elif refused.refusal is Refusal.NUMERIC_HOST:
        message = (
            "url's host is a number in a non-standard form (decimal, octal, hex or shortened); "
            "use a DNS name"
        )
    elif refused.resolved:
        # A name: whether it did not resolve or resolved to an internal address is not said
        # (outside development), so the answer cannot map paytide's own network.
        message = "url's host must resolve, from paytide, to public addresses only"
        reason = refused.refusal if development else None
    else:
        message = f"url points at a {refused.refusal.value} address ({refused.address})"
    hint = (
        "; set PAYTIDE_WEBHOOK_ALLOW_LOOPBACK=true for a receiver on this machine"
        if development and refused.refusal is Refusal.LOOPBACK
        else ""
    )
    return ApiError(
        422,
        "webhook_url_forbidden",
        f"{message}. Webhook endpoints must be public https URLs, never {_RANGES} addresses{hint}.",
        {"reason": reason.value} if reason is not None else None,
    )


async def create_endpoint(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    body = validate(CreateWebhookEndpoint, await read_json(request, state.settings.max_body_bytes))
    await _check_target(state, body.url)
    ring = state.settings.payload_key_ring

    def write() -> tuple[ledger.EndpointView, str]:
        with transaction(state.sessions) as session:
            return ledger.create(
                session,
                ring,
                merchant_id=merchant,
                url=body.url,
                events=list(body.events),
                description=body.description,
            )

    view, secret = await run_in_threadpool(write)
    log.info("webhook_endpoint_created", endpoint_id=view.id, merchant_id=merchant)
    return JSONResponse(public_endpoint(view, secret), status_code=201)


async def list_endpoints(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)

    def read() -> list[ledger.EndpointView]:
        with transaction(state.sessions) as session:
            return ledger.list_for(session, merchant)

    views = await run_in_threadpool(read)
    return JSONResponse({"object": "list", "data": [public_endpoint(v) for v in views]})


async def get_endpoint(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    endpoint_id = _endpoint_id(request)

    def read() -> ledger.EndpointView | None:
        with transaction(state.sessions) as session:
            row = ledger.get(session, merchant, endpoint_id)
            return ledger.view_of(row) if row is not None else None

    view = await run_in_threadpool(read)
    if view is None:
        raise _not_found(endpoint_id)
    return JSONResponse(public_endpoint(view))


async def _change(request: Request, body: UpdateWebhookEndpoint, event: str) -> ledger.EndpointView:
    state = state_of(request)
    merchant = merchant_of(request)
    endpoint_id = _endpoint_id(request)
    if body.url is not None:
        await _check_target(state, body.url)
    elif body.status == ledger.ENABLED:
        # Re-enabled (perhaps after a delivery found its host internal): checked again.
        def read() -> str | None:
            with transaction(state.sessions) as session:
                row = ledger.get(session, merchant, endpoint_id)
                return row.url if row is not None else None

        url = await run_in_threadpool(read)
        if url is None:
            raise _not_found(endpoint_id)
        await _check_target(state, url)

    def write() -> ledger.EndpointView | None:
        with transaction(state.sessions) as session:
            row = ledger.get(session, merchant, endpoint_id)
            if row is None:
                return None
            return ledger.update(
                session,
                row,
                url=body.url,
                events=list(body.events) if body.events is not None else None,
                status=body.status,
                description=body.description,
            )

    view = await run_in_threadpool(write)
    if view is None:
        raise _not_found(endpoint_id)
    log.info(event, endpoint_id=endpoint_id, merchant_id=merchant, status=view.status)
    return view


async def update_endpoint(request: Request) -> Response:
    state = state_of(request)
    body = validate(UpdateWebhookEndpoint, await read_json(request, state.settings.max_body_bytes))
    return JSONResponse(public_endpoint(await _change(request, body, "webhook_endpoint_updated")))


async def disable_endpoint(request: Request) -> Response:
    body = UpdateWebhookEndpoint(status="disabled")
    return JSONResponse(public_endpoint(await _change(request, body, "webhook_endpoint_disabled")))


async def rotate_secret(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    endpoint_id = _endpoint_id(request)
    ring = state.settings.payload_key_ring
    overlap = timedelta(seconds=state.settings.webhook_secret_overlap)

    def write() -> tuple[ledger.EndpointView, str] | None:
        with transaction(state.sessions) as session:
            row = ledger.get(session, merchant, endpoint_id)
            if row is None:
                return None
            return ledger.rotate(session, ring, row, overlap=overlap)

    rotated = await run_in_threadpool(write)
    if rotated is None:
        raise _not_found(endpoint_id)
    view, secret = rotated
    log.info("webhook_secret_rotated", endpoint_id=endpoint_id, merchant_id=merchant)
    return JSONResponse(public_endpoint(view, secret))
