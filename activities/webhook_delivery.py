"""One try of one (event, endpoint) delivery, logged in the ledger whatever happens.

Before every try the endpoint's host is resolved and each address checked (paytide/outbound.py);
the request then goes to a checked address, never to the name again, so a DNS answer that turned
internal since registration (rebinding) is caught here. Such a target is never called: the
attempt is logged as ``target_forbidden`` (no status, no latency), the endpoint is disabled and
the delivery becomes a dead letter at once.
"""

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
from paytide.outbound import (
    Refusal,
    Resolver,
    Target,
    TargetPolicy,
    TargetRefused,
    check_url,
    system_resolver,
)
from workflows.delivery_contract import DeadLetter, DeliveryAttempt, DeliveryOutcome

SIGNATURE_HEADER = "Paytide-Signature"
EVENT_ID_HEADER = "Paytide-Event-Id"
# What the merchant sees of a refused target: nothing about what answers at that address.
FORBIDDEN_TYPE = "target_forbidden"
TARGET_FORBIDDEN = (
    f"{FORBIDDEN_TYPE}: the endpoint's host does not resolve to public addresses only; the "
    "endpoint was disabled. Fix its DNS or URL, then enable it"
)
UNRESOLVED = "endpoint unreachable: its host did not resolve"


@dataclass(frozen=True)
class _Prepared:
    url: str
    endpoint_id: str
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


async def post_to_checked_address(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST to the target's checked addresses in order (the next one only when a connection
    could not be opened), never to its name, never following a redirect. The name goes in Host
    and, for https, is the TLS server name the certificate is verified against. Each request has
    its own connection: a pooled one, opened for another name on the same address, would skip
    this name's certificate check."""
    sent = {**headers, "Host": target.host_header, "Connection": "close"}
    tls_name = target.scheme == "https" and not target.host_is_address
    extensions = {"sni_hostname": target.host} if tls_name else None
    last = len(target.addresses) - 1
    for index, address in enumerate(target.addresses):
        try:
            return await client.post(
                target.pinned_url(address),
                content=body,
                headers=sent,
                extensions=extensions,
                follow_redirects=False,
            )
        except httpx.ConnectError:
            if index == last:
                raise
    raise AssertionError("a checked target has at least one address")


class WebhookDeliveryActivities:
    """``policy``: which addresses endpoints may resolve to; ``resolver``: how their hosts are
    resolved (the system's getaddrinfo unless a test injects another)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        sessions: SessionFactory,
        ring: KeyRing,
        *,
        policy: TargetPolicy,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._ring = ring
        self._policy = policy
        self._resolver = resolver

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
                endpoint_id=endpoint.id,
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

    def _refuse(self, delivery_id: str, endpoint_id: str) -> None:
        """Log the refused try and disable its endpoint: until its DNS or URL is fixed, every
        try would be refused too."""
        with transaction(self._sessions) as session:
            deliveries.record_attempt(
                session,
                delivery_id,
                status_code=None,
                latency_ms=0,
                error=TARGET_FORBIDDEN,
                delivered=False,
            )
            endpoint = session.get(WebhookEndpoint, endpoint_id)
            if endpoint is not None and endpoint.status == endpoints.ENABLED:
                endpoints.update(
                    session,
                    endpoint,
                    url=None,
                    events=None,
                    status=endpoints.DISABLED,
                    description=None,
                )

    async def _target(self, delivery_id: str, prepared: _Prepared) -> Target:
        try:
            return await check_url(prepared.url, self._policy, self._resolver)
        except TargetRefused as refused:
            if refused.refusal is Refusal.UNRESOLVABLE:
                await asyncio.to_thread(self._record, delivery_id, None, 0, UNRESOLVED)
                raise ApplicationError(UNRESOLVED, type="webhook_undelivered") from None
            activity.logger.warning(
                "webhook target forbidden; endpoint disabled",
                extra={
                    "delivery_id": delivery_id,
                    "endpoint_id": prepared.endpoint_id,
                    "refusal": refused.refusal.value,
                    "address": str(refused.address),
                },
            )
            await asyncio.to_thread(self._refuse, delivery_id, prepared.endpoint_id)
            # Its text is "<type>: <message>" where it surfaces: the same words as the log.
            message = TARGET_FORBIDDEN.removeprefix(f"{FORBIDDEN_TYPE}: ")
            raise ApplicationError(message, type=FORBIDDEN_TYPE, non_retryable=True) from None

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
        target = await self._target(request.delivery_id, prepared)
        headers = {
            SIGNATURE_HEADER: sign_all(prepared.secrets, prepared.body, int(time.time())),
            EVENT_ID_HEADER: prepared.event_id,
            "Content-Type": "application/json",
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await post_to_checked_address(self._client, target, prepared.body, headers)
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
