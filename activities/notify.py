"""Telling the merchant: a signed event POSTed to the merchant's callback URL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.signing import sign
from ledger import payments
from ledger.engine import SessionFactory, transaction
from workflows.contract import NotificationInput, NotificationResult, OperatorAlert
from workflows.public import public_payment

SIGNATURE_HEADER = "Paytide-Signature"


def event_id(payment_id: str, event_type: str) -> str:
    """Stable per payment and event type, so a receiver can drop re-deliveries."""
    digest = hashlib.sha256(f"{payment_id}:{event_type}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


class NotificationActivities:
    def __init__(
        self,
        client: httpx.AsyncClient,
        sessions: SessionFactory,
        *,
        callback_url: str | None,
        signing_secret: str | None,
        ops_url: str | None = None,
        ops_secret: str | None = None,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._url = callback_url
        self._secret = signing_secret
        self._ops_url = ops_url
        self._ops_secret = ops_secret

    @activity.defn(name="alert_operators")
    async def alert_operators(self, alert: OperatorAlert) -> NotificationResult:
        """Tell the operators' channel about a payment that needs a human, with its factors."""
        if not self._ops_url or not self._ops_secret:
            return NotificationResult(delivered=False, skipped_reason="no_ops_alert_url")
        body = json.dumps(
            {
                "id": event_id(alert.payment.payment_id, f"ops.{alert.kind}"),
                "type": alert.kind,
                "created": int(time.time()),
                "data": public_payment(alert.payment),
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            SIGNATURE_HEADER: sign(self._ops_secret, body, int(time.time())),
            "Content-Type": "application/json",
        }
        try:
            response = await self._client.post(self._ops_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise ApplicationError(
                f"ops alert endpoint unreachable: {type(error).__name__}", type="alert_failed"
            ) from error
        if not response.is_success:
            raise ApplicationError(
                f"ops alert endpoint answered {response.status_code}", type="alert_failed"
            )
        return NotificationResult(delivered=True, status_code=response.status_code)

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, notification: NotificationInput) -> NotificationResult:
        payment_id = notification.payment.payment_id
        attempt = activity.info().attempt
        if not self._url or not self._secret:
            await self._record(notification, "skipped", attempt, "no callback URL configured")
            return NotificationResult(delivered=False, skipped_reason="no_callback_url")
        body = json.dumps(
            {
                "id": event_id(payment_id, notification.event_type),
                "type": notification.event_type,
                "created": int(time.time()),
                "data": public_payment(notification.payment),
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
            "Content-Type": "application/json",
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as error:
            await self._record(
                notification, "retrying", attempt, f"{type(error).__name__}: {error}"
            )
            raise ApplicationError(
                f"merchant endpoint unreachable: {type(error).__name__}", type="notification_failed"
            ) from error
        if response.is_success:
            await self._record(notification, "delivered", attempt, None)
            return NotificationResult(delivered=True, status_code=response.status_code)
        error_text = f"merchant endpoint answered {response.status_code}"
        await self._record(notification, "retrying", attempt, error_text)
        raise ApplicationError(error_text, type="notification_failed")

    async def _record(
        self, notification: NotificationInput, status: str, attempts: int, error: str | None
    ) -> None:
        def write() -> None:
            with transaction(self._sessions) as session:
                payments.record_notification(
                    session,
                    payment_id=notification.payment.payment_id,
                    event_type=notification.event_type,
                    status=status,
                    attempts=attempts,
                    error=error,
                )

        await asyncio.to_thread(write)
