"""The sandbox gateway's HTTP API: authentication, request parsing and JSON answers.

Requests are served without the lifespan having run (httpx's ASGITransport skips it); the
lifespan's only job is to stop background work and close the webhook client at shutdown.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateways.sandbox_server.charges import ChargeStore
from gateways.sandbox_server.config import SandboxConfig
from gateways.sandbox_server.errors import SandboxError, handle_http_error, handle_sandbox_error
from gateways.sandbox_server.outage import MAX_OUTAGE_SECONDS, Outage
from gateways.sandbox_server.processor import Processor
from gateways.sandbox_server.refunds import RefundStore
from gateways.sandbox_server.schemas import (
    CaptureBody,
    CloseDisputeBody,
    CreateChargeBody,
    CreateRefundBody,
    OpenDisputeBody,
    ThreeDSBody,
)
from gateways.sandbox_server.tasks import TaskTracker
from gateways.sandbox_server.webhooks import WebhookDispatcher
from paytide import untrusted_json

logger = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise SandboxError(
            400,
            "missing_idempotency_key",
            f"send an {IDEMPOTENCY_HEADER} header, unique per logical operation",
        )
    return key


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        payload = untrusted_json.loads(await request.body())
    except untrusted_json.UntrustedJsonError as error:
        raise SandboxError(400, "invalid_request", f"the body is refused: {error}") from None
    if not isinstance(payload, dict):
        raise SandboxError(400, "invalid_request", "the body must be a JSON object")
    return payload


def _replay_headers(replayed: bool) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if replayed else None


def _invalid(error: ValidationError) -> SandboxError:
    fields = [
        {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in error.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return SandboxError(400, "invalid_request", summary, details={"fields": fields})


class _Api:
    def __init__(
        self,
        config: SandboxConfig,
        store: ChargeStore,
        refunds: RefundStore,
        processor: Processor,
        outage: Outage,
    ) -> None:
        self._api_key = config.api_key
        self._store = store
        self._refunds = refunds
        self._processor = processor
        self._outage = outage

    def _authenticate(self, request: Request) -> None:
        token = _bearer_token(request)
        if token is None or not hmac.compare_digest(token.encode(), self._api_key.encode()):
            raise SandboxError(401, "unauthorized", "send Authorization: Bearer <sandbox api key>")

    async def healthz(self, _request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def create_charge(self, request: Request) -> JSONResponse:
        if self._outage.active:
            # Refused before authentication, counting or parsing: nothing behind it answered.
            raise SandboxError(503, "service_unavailable", "the sandbox processor is down; retry")
        self._authenticate(request)
        key = _idempotency_key(request)
        self._store.count_request(key)
        try:
            body = CreateChargeBody.model_validate(await _json_object(request))
        except ValidationError as error:
            raise _invalid(error) from None

        def redirect_url_for(charge_id: str) -> str:
            return str(request.url_for("complete_3ds", charge_id=charge_id))

        charge, replayed = await self._processor.create_charge(body, key, redirect_url_for)
        return JSONResponse(charge.to_json(), headers=_replay_headers(replayed))

    async def find_charge(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        key = request.query_params.get("idempotency_key")
        if not key:
            raise SandboxError(
                400, "invalid_request", "pass ?idempotency_key=...; listing charges is not offered"
            )
        return JSONResponse(self._processor.for_key(key).to_json())

    async def get_charge(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        return JSONResponse(self._processor.get(request.path_params["charge_id"]).to_json())

    async def cancel_charge(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        _idempotency_key(request)
        charge = self._processor.cancel(request.path_params["charge_id"])
        return JSONResponse(charge.to_json())

    async def capture_charge(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        key = _idempotency_key(request)
        # An empty body captures the whole authorized amount.
        raw = await _json_object(request) if await request.body() else {}
        try:
            body = CaptureBody.model_validate(raw)
        except ValidationError as error:
            raise _invalid(error) from None
        charge, replayed = await self._processor.capture(
            request.path_params["charge_id"], body, key
        )
        return JSONResponse(charge.to_json(), headers=_replay_headers(replayed))

    async def create_refund(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        key = _idempotency_key(request)
        try:
            body = CreateRefundBody.model_validate(await _json_object(request))
        except ValidationError as error:
            raise _invalid(error) from None
        refund, replayed = await self._processor.create_refund(body, key)
        return JSONResponse(refund.to_json(), headers=_replay_headers(replayed))

    async def get_refund(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        return JSONResponse(self._processor.get_refund(request.path_params["refund_id"]).to_json())

    async def open_dispute(self, request: Request) -> JSONResponse:
        """Test control: the cardholder disputes a succeeded charge (``dispute.created``)."""
        self._authenticate(request)
        raw = await _json_object(request) if await request.body() else {}
        try:
            body = OpenDisputeBody.model_validate(raw)
        except ValidationError as error:
            raise _invalid(error) from None
        dispute = self._processor.open_dispute(request.path_params["charge_id"], body)
        return JSONResponse(dispute.to_json())

    async def close_dispute(self, request: Request) -> JSONResponse:
        """Test control: the network decides a dispute won or lost (``dispute.closed``)."""
        self._authenticate(request)
        try:
            body = CloseDisputeBody.model_validate(await _json_object(request))
        except ValidationError as error:
            raise _invalid(error) from None
        dispute = self._processor.close_dispute(request.path_params["dispute_id"], body)
        return JSONResponse(dispute.to_json())

    async def get_dispute(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        dispute = self._processor.get_dispute(request.path_params["dispute_id"])
        return JSONResponse(dispute.to_json())

    async def complete_3ds(self, request: Request) -> JSONResponse:
        # No bearer token: this is the customer's browser, which holds only the client secret.
        try:
            body = ThreeDSBody.model_validate(await _json_object(request))
        except ValidationError as error:
            raise _invalid(error) from None
        charge = self._processor.complete_3ds(
            request.path_params["charge_id"], body.client_secret, body.result == "success"
        )
        return JSONResponse(charge.to_json())

    async def start_outage(self, request: Request) -> JSONResponse:
        """Test control: every ``POST /v1/charges`` answers 503 for ``seconds`` from now."""
        self._authenticate(request)
        seconds = (await _json_object(request)).get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_OUTAGE_SECONDS
        ):
            raise SandboxError(
                400,
                "invalid_request",
                f"seconds must be a number from 0 to {MAX_OUTAGE_SECONDS:.0f} (0 ends an outage)",
            )
        remaining = self._outage.start(float(seconds))
        logger.warning("sandbox_outage_started", seconds=remaining)
        return JSONResponse({"outage_seconds_remaining": remaining})

    async def stats(self, request: Request) -> JSONResponse:
        self._authenticate(request)
        return JSONResponse({**self._store.stats(), **self._refunds.stats()})


def create_sandbox_app(
    config: SandboxConfig, *, webhook_transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """Build a sandbox gateway whose state lives in memory for the life of the returned app.

    ``webhook_transport`` lets tests deliver webhooks in-process (an ``httpx.ASGITransport``)
    instead of over the network.
    """
    store = ChargeStore()
    refunds = RefundStore()
    tasks = TaskTracker()
    dispatcher = WebhookDispatcher(
        url=config.webhook_url,
        secret=config.webhook_secret,
        max_attempts=config.webhook_max_attempts,
        transport=webhook_transport,
    )
    processor = Processor(
        config=config, store=store, refunds=refunds, dispatcher=dispatcher, tasks=tasks
    )
    api = _Api(config, store, refunds, processor, Outage())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        logger.info("sandbox_started", webhook_url=config.webhook_url)
        try:
            yield
        finally:
            await tasks.aclose()
            await dispatcher.aclose()
            logger.info("sandbox_stopped")

    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/v1/charges", api.create_charge, methods=["POST"]),
        Route("/v1/charges", api.find_charge, methods=["GET"]),
        Route("/v1/charges/{charge_id}", api.get_charge, methods=["GET"]),
        Route("/v1/charges/{charge_id}/cancel", api.cancel_charge, methods=["POST"]),
        Route("/v1/charges/{charge_id}/capture", api.capture_charge, methods=["POST"]),
        Route(
            "/v1/charges/{charge_id}/3ds", api.complete_3ds, methods=["POST"], name="complete_3ds"
        ),
        Route("/v1/refunds", api.create_refund, methods=["POST"]),
        Route("/v1/refunds/{refund_id}", api.get_refund, methods=["GET"]),
        Route("/v1/charges/{charge_id}/dispute", api.open_dispute, methods=["POST"]),
        Route("/v1/disputes/{dispute_id}", api.get_dispute, methods=["GET"]),
        Route("/v1/disputes/{dispute_id}/close", api.close_dispute, methods=["POST"]),
        Route("/v1/stats", api.stats, methods=["GET"]),
        Route("/v1/_test/outage", api.start_outage, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={SandboxError: handle_sandbox_error, HTTPException: handle_http_error},
    )
    app.state.store = store
    app.state.refunds = refunds
    app.state.tasks = tasks
    return app
