"""A tiny Starlette app that records the webhooks posted to it, for tests to wait on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateways.base import WebhookRejected
from gateways.signing import verify

WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes
    # What the recorder answered: a test may script failures to exercise retries.
    status: int

    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class WebhookRecorder:
    """Answers POST /webhooks with 200, or 500 for the first ``fail_first`` deliveries.

    As a merchant's receiver would: with ``secrets`` set, a request whose ``Paytide-Signature``
    does not verify is answered 400; while ``down``, every request gets 503; ``delay`` holds
    each answer that long (a slow receiver), and while ``answering`` is cleared each answer waits
    until it is set again (a receiver that stalls until the test says). ``event_ids`` is its
    dedupe: each ``Paytide-Event-Id`` it accepted, once.
    """

    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.secrets: list[str] = []
        self.down = False
        self.delay = 0.0
        self.answering = asyncio.Event()
        self.answering.set()
        self.received: list[ReceivedWebhook] = []
        self.event_ids: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self.app = Starlette(routes=[Route("/webhooks", self._receive, methods=["POST"])])

    def _status(self, headers: dict[str, str], body: bytes) -> int:
        if self.down:
            return 503
        if self.secrets:
            try:
                verify(headers.get("paytide-signature"), body, self.secrets, 300, time.time())
            except WebhookRejected:
                return 400
        return 500 if len(self.received) < self.fail_first else 200

    async def _receive(self, request: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        await self.answering.wait()
        headers, body = dict(request.headers), await request.body()
        status = self._status(headers, body)
        event_id = headers.get("paytide-event-id")
        if status == 200 and event_id:
            self.event_ids[event_id] = self.event_ids.get(event_id, 0) + 1
        webhook = ReceivedWebhook(headers, body, status)
        async with self._changed:
            self.received.append(webhook)
            self._changed.notify_all()
        return Response(status_code=status)

    @property
    def delivered(self) -> list[ReceivedWebhook]:
        return [webhook for webhook in self.received if webhook.status == 200]

    async def wait_for(self, predicate: Callable[[ReceivedWebhook], bool]) -> ReceivedWebhook:
        """The first delivered webhook matching ``predicate``, waiting up to WAIT_SECONDS."""

        def match() -> ReceivedWebhook | None:
            return next((w for w in self.delivered if predicate(w)), None)

        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: match() is not None)
        found = match()
        assert found is not None
        return found

    async def wait_for_event(self, charge_id: str, event_type: str) -> ReceivedWebhook:
        def wanted(webhook: ReceivedWebhook) -> bool:
            event = webhook.json()
            return bool(event["type"] == event_type and event["data"]["id"] == charge_id)

        return await self.wait_for(wanted)

    def events_for(self, charge_id: str) -> list[dict[str, Any]]:
        """Every delivered event about one charge, in arrival order."""
        events = [webhook.json() for webhook in self.delivered]
        return [event for event in events if event["data"]["id"] == charge_id]
