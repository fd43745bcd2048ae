"""One event to every matching endpoint of its merchant, plus a customer's receipt.

Runs inside the notification activities the payment, refund and dispute workflows already call,
so emitting events changed none of their histories (docs/decisions.md). Each delivery is its own
detached workflow: this only writes the delivery rows and starts those workflows, which costs the
caller a ledger write and a Temporal call, never a receiver's time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from ledger import webhook_deliveries as deliveries
from ledger import webhook_endpoints as endpoints
from ledger.engine import SessionFactory, transaction
from ledger.models import Payment
from paytide.codec import KeyRing
from paytide.sealing import seal
from paytide.webhook_dispatch import start_delivery, start_receipt
from workflows.delivery_contract import DeliveryInput, DeliverySettings, ReceiptInput
from workflows.events import ENDPOINT_EVENTS, RECEIPT_EVENTS


@dataclass(frozen=True, kw_only=True)
class Event:
    event_id: str
    event_type: str
    merchant_id: str
    data: dict[str, Any]


class EventFanOut:
    def __init__(
        self,
        client: Client,
        sessions: SessionFactory,
        ring: KeyRing,
        *,
        task_queue: str,
        settings: DeliverySettings,
        receipts: bool,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._ring = ring
        self._task_queue = task_queue
        self._settings = settings
        self._receipts = receipts

    async def emit(self, event: Event) -> int:
        """Start a delivery per subscribed endpoint; how many this call started."""
        if event.event_type not in ENDPOINT_EVENTS:
            return 0

        def rows() -> list[DeliveryInput]:
            with transaction(self._sessions) as session:
                found = []
                for endpoint in endpoints.subscribed(session, event.merchant_id, event.event_type):
                    row = deliveries.ensure(
                        session,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        endpoint_id=endpoint.id,
                        merchant_id=event.merchant_id,
                        payload=event.data,
                    )
                    found.append(
                        DeliveryInput(
                            delivery_id=row.id,
                            event_id=event.event_id,
                            event_type=event.event_type,
                            endpoint_id=endpoint.id,
                            merchant_id=event.merchant_id,
                            settings=self._settings,
                        )
                    )
                return found

        started = 0
        for delivery in await asyncio.to_thread(rows):
            started += await start_delivery(self._client, self._task_queue, delivery)
        return started

    async def remember_email(self, payment_id: str, email: str | None) -> None:
        """Seal the customer's address onto the payment's row, for its receipts."""
        if not email:
            return

        def write() -> None:
            with transaction(self._sessions) as session:
                row = session.get(Payment, payment_id)
                if row is not None and row.customer_email_sealed is None:
                    row.customer_email_sealed = seal(self._ring, email, bound_to=payment_id)
                    session.add(row)

        await asyncio.to_thread(write)

    async def receipt(self, receipt: ReceiptInput) -> bool:
        """Start the customer's receipt, when SMTP is configured and the payment has an address."""
        if not self._receipts or receipt.event_type not in RECEIPT_EVENTS:
            return False

        def has_address() -> bool:
            with transaction(self._sessions) as session:
                row = session.get(Payment, receipt.payment_id)
                return row is not None and row.customer_email_sealed is not None

        if not await asyncio.to_thread(has_address):
            return False
        return await start_receipt(self._client, self._task_queue, receipt)
