"""One try of one (event, endpoint) delivery, logged in the ledger whatever happens."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.signing import sign_all
from ledger import webhook_deliveries as deliveries
from ledger import webhook_endpoints as endpoints
from ledger.engine import SessionFactory, transaction
from ledger.merchants import aware
from ledger.models import WebhookEndpoint, utcnow
from paytide.codec import KeyRing
from workflows.delivery_contract import DeadLetter, DeliveryAttempt, DeliveryOutcome

SIGNATURE_HEADER = "Paytide-Signature"
EVENT_ID_HEADER = "Paytide-Event-Id"


@dataclass(frozen=True)
class _Prepared:
    url: str
    secrets: list[str]
    event_id: str
    body: bytes
    delivered: bool
    enabled: bool


def event_body(event_id: str, event_type: str, created: int, data: Any) -> bytes:
    """The exact bytes every try sends: only the signature's timestamp changes between tries."""
    return json.dumps(
        {"id": event_id, "type": event_type, "created": created, "data": data},
        separators=(",", ":"),
    ).encode()


class WebhookDeliveryActivities:
    def __init__(self, client: httpx.AsyncClient, sessions: SessionFactory, ring: KeyRing) -> None:
        self._client = client
        self._sessions = sessions
        self._ring = ring

    def _prepare(self, delivery_id: str) -> _Prepared:
        with transaction(self._sessions) as session:
            row = deliveries.get(session, delivery_id)
            if row is None:
                raise ApplicationError(
                    f"no webhook delivery {delivery_id!r}", type="delivery_gone", non_retryable=True
                )
            endpoint = session.get(WebhookEndpoint, row.endpoint_id)
            assert endpoint is not None  # a foreign key
            created = int((aware(row.event_created_at) or utcnow()).timestamp())
            return _Prepared(
                url=endpoint.url,
                secrets=endpoints.signing_secrets(self._ring, endpoint, utcnow()),
                event_id=row.event_id,
                body=event_body(row.event_id, row.event_type, created, row.payload),
                delivered=row.status == deliveries.DELIVERED,
                enabled=endpoint.status == endpoints.ENABLED,
            )

    def _record(
        self, delivery_id: str, status_code: int | None, latency_ms: int, error: str | None
    ) -> int:
        with transaction(self._sessions) as session:
            return deliveries.record_attempt(
                session,
                delivery_id,
                status_code=status_code,
                latency_ms=latency_ms,
                error=error,
                delivered=error is None,
            )

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, request: DeliveryAttempt) -> DeliveryOutcome:
        """POST the event to its endpoint, signed with every live secret; a non-2xx answer or a
        network error is retried by the workflow's policy."""
        prepared = await asyncio.to_thread(self._prepare, request.delivery_id)
        if prepared.delivered:
            # A retry after the receiver took it (the activity's result was lost): send nothing.
            return DeliveryOutcome(delivered=True)
        if not prepared.enabled:
            raise ApplicationError(
                "the endpoint is disabled", type="endpoint_disabled", non_retryable=True
            )
        headers = {
            SIGNATURE_HEADER: sign_all(prepared.secrets, prepared.body, int(time.time())),
            EVENT_ID_HEADER: prepared.event_id,
            "Content-Type": "application/json",
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(prepared.url, content=prepared.body, headers=headers)
            status_code = response.status_code
            if not response.is_success:
                error = f"endpoint answered {status_code}"
        except httpx.HTTPError as failure:
            error = f"endpoint unreachable: {type(failure).__name__}: {failure}"
        latency_ms = int((time.monotonic() - started) * 1000)
        attempt = await asyncio.to_thread(
            self._record, request.delivery_id, status_code, latency_ms, error
        )
        if error is not None:
            raise ApplicationError(error, type="webhook_undelivered")
        return DeliveryOutcome(delivered=True, status_code=status_code, attempt=attempt)

    @activity.defn(name="dead_letter_delivery")
    async def dead_letter(self, letter: DeadLetter) -> bool:
        """The retry window ran out: the delivery is failed until someone re-drives it."""

        def write() -> bool:
            with transaction(self._sessions) as session:
                return deliveries.mark_failed(session, letter.delivery_id, letter.error)

        return await asyncio.to_thread(write)
