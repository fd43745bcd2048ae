"""Temporal boundary types of webhook deliveries and email receipts (workflows/delivery.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DeliverySettings:
    """Captured when the delivery starts, so a settings change never rewrites its history."""

    window_seconds: float = 24 * 3600.0
    initial_interval_seconds: float = 10.0
    max_interval_seconds: float = 3600.0
    attempt_timeout_seconds: float = 10.0


@dataclass(frozen=True, kw_only=True)
class DeliveryInput:
    delivery_id: str
    event_id: str
    event_type: str
    endpoint_id: str
    merchant_id: str
    # 0 for the first delivery, then one per re-drive of a dead letter.
    round: int = 0
    settings: DeliverySettings = DeliverySettings()


@dataclass(frozen=True, kw_only=True)
class DeliveryAttempt:
    delivery_id: str


@dataclass(frozen=True, kw_only=True)
class DeliveryOutcome:
    delivered: bool
    status_code: int | None = None
    attempt: int = 0


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    delivery_id: str
    event_id: str
    event_type: str
    endpoint_id: str
    merchant_id: str
    error: str


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    delivery_id: str
    status: str


@dataclass(frozen=True, kw_only=True)
class ReceiptInput:
    """A receipt to the customer of ``payment_id``. The address is not here: the activity reads
    it sealed from the ledger, so it travels in no payload at all."""

    event_id: str
    event_type: str
    payment_id: str
    amount_minor: int
    currency: str
    # The refund's id for refund.succeeded.
    refund_id: str | None = None
    order_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ReceiptResult:
    sent: bool
    skipped_reason: str | None = None
