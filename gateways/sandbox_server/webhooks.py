"""Signed webhook delivery to the configured URL, retried with capped exponential backoff."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from gateways.signing import sign

logger = structlog.get_logger(__name__)

SIGNATURE_HEADER = "Sandbox-Signature"
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
DELIVERY_TIMEOUT_SECONDS = 10.0


def event_id(object_id: str, event_type: str) -> str:
    """Stable per (object, type), so every retry of a delivery carries the same id to dedupe on."""
    digest = hashlib.sha256(f"{object_id}/{event_type}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def build_event(data: dict[str, Any], event_type: str, created: int) -> dict[str, Any]:
    """An event about ``data``, a charge's or a refund's JSON snapshot (it carries an ``id``)."""
    return {
        "id": event_id(data["id"], event_type),
        "type": event_type,
        "created": created,
        "data": data,
    }


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(min(FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


class WebhookDispatcher:
    def __init__(
        self,
        *,
        url: str,
        secret: str,
        max_attempts: int,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._transport = transport
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Built on first use so an app that never sends a webhook never holds a connection pool.
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, timeout=DELIVERY_TIMEOUT_SECONDS
            )
        return self._client

    async def deliver(self, event: dict[str, Any]) -> bool:
        """POST ``event`` until a 2xx answer or the attempts run out; True when delivered."""
        body = json.dumps(event, separators=(",", ":")).encode()
        log = logger.bind(event_id=event["id"], event_type=event["type"])
        for attempt in range(1, self._max_attempts + 1):
            # Signed afresh per attempt: a late retry must not look like a replayed old message.
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
            }
            try:
                response = await self._http().post(self._url, content=body, headers=headers)
            except httpx.HTTPError as error:
                log.warning("webhook_delivery_failed", attempt=attempt, error=repr(error))
            else:
                if response.is_success:
                    log.info("webhook_delivered", attempt=attempt, status_code=response.status_code)
                    return True
                log.warning(
                    "webhook_delivery_failed", attempt=attempt, status_code=response.status_code
                )
            if attempt < self._max_attempts:
                await asyncio.sleep(backoff(attempt))
        log.error("webhook_abandoned", attempts=self._max_attempts)
        return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
