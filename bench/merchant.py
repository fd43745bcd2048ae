"""The merchant's side of the benchmark: an endpoint for paytide's signed callbacks.

A merchant learns that a payment succeeded from the ``payment.succeeded`` callback, not by
asking every 25 ms; with ``--observe webhook`` (the default) each client waits for that callback,
so the API serves the POSTs and the webhooks a merchant causes, not a polling loop's GETs. The
signature is checked as a merchant must.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateways.base import WebhookRejected
from gateways.signing import verify

SIGNATURE_HEADER = "paytide-signature"
TOLERANCE_SECONDS = 300


class Settled:
    """Payments whose ``payment.succeeded`` callback arrived, by payment id."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.rejected = 0

    def _event(self, payment_id: str) -> asyncio.Event:
        return self._events.setdefault(payment_id, asyncio.Event())

    def succeeded(self, payment_id: str) -> None:
        self._event(payment_id).set()

    async def wait(self, payment_id: str, seconds: float) -> bool:
        """True once the callback came (before or during the wait); False after ``seconds``."""
        try:
            await asyncio.wait_for(self._event(payment_id).wait(), seconds)
        except TimeoutError:
            return False
        finally:
            self._events.pop(payment_id, None)
        return True


def _app(settled: Settled, secret: str) -> Starlette:
    async def callback(request: Request) -> Response:
        body = await request.body()
        try:
            verify(
                request.headers.get(SIGNATURE_HEADER),
                body,
                [secret],
                TOLERANCE_SECONDS,
                time.time(),
            )
        except WebhookRejected:
            settled.rejected += 1
            return Response(status_code=400)
        event = json.loads(body)
        if event.get("type") == "payment.succeeded":
            settled.succeeded(event["data"]["id"])
        return Response(status_code=204)

    return Starlette(routes=[Route("/callbacks", callback, methods=["POST"])])


def new_secret() -> str:
    return secrets.token_hex(32)


@asynccontextmanager
async def serving(port: int, secret: str) -> AsyncIterator[Settled]:
    """Serve the callback endpoint on 127.0.0.1:``port`` in this event loop."""
    settled = Settled()
    config = uvicorn.Config(
        _app(settled, secret),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it (a port in use, say)
            raise SystemExit(f"the merchant endpoint on port {port} stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield settled
    finally:
        server.should_exit = True
        await task
