"""A tiny Starlette app that records the webhooks posted to it, for tests to wait on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
    """Answers POST /webhooks with 200, or 500 for the first ``fail_first`` deliveries."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[ReceivedWebhook] = []
        self._changed = asyncio.Condition()
        self.app = Starlette(routes=[Route("/webhooks", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        status = 500 if len(self.received) < self.fail_first else 200
        webhook = ReceivedWebhook(dict(request.headers), await request.body(), status)
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
