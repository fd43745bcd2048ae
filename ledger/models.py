"""The ledger's tables. Every write to them is idempotent, because activities run at least once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(*, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=index),
    )


class Payment(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key", name="uq_payments_merchant_key"),
        # The seed's two secondary indexes: a customer's history and the status dashboards.
        Index("ix_payments_customer_created", "customer_id", "created_at"),
        Index("ix_payments_status_created", "status", "created_at"),
        # Fraud scoring (ledger/risk.py): a customer's succeeded history and recent declines,
        # and a payment method's last minutes (card testing).
        Index("ix_payments_customer_status_created", "customer_id", "status", "created_at"),
        Index("ix_payments_method_created", "payment_method", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    merchant_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64)
    workflow_id: str = Field(max_length=400, unique=True)
    status: str = Field(max_length=32)
    amount_minor: int = Field(sa_type=BigInteger)
    # What was taken from the card (less than amount_minor after a partial capture); None until
    # the payment succeeded. Refunds are bounded by it, never by amount_minor.
    amount_captured: int | None = Field(default=None, sa_type=BigInteger)
    currency: str = Field(max_length=3)
    customer_id: str = Field(max_length=255)
    order_id: str = Field(max_length=255)
    payment_method: str = Field(max_length=255)
    description: str | None = Field(default=None, max_length=1000)
    payment_metadata: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    capture_method: str = Field(max_length=16)
    gateway: str | None = Field(default=None, max_length=16)
    gateway_reference: str | None = Field(default=None, max_length=255, index=True)
    risk_score: int | None = None
    risk_factors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    ip_address: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, max_length=255)
    country: str | None = Field(default=None, max_length=2)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=1000)
    failure_retryable: bool | None = None
    # Personal data: sealed with the payload key ring (paytide/sealing.py), read only to send a
    # receipt.
    customer_email_sealed: str | None = Field(default=None, max_length=800)
    # Sequence number of the last transition applied: a re-delivered older write is ignored.
    last_seq: int = 0
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class PaymentEvent(SQLModel, table=True):
    """Append-only log of every status change, one row per workflow transition."""

    __tablename__ = "payment_events"
    __table_args__ = (UniqueConstraint("payment_id", "seq", name="uq_payment_events_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    payment_id: str = Field(max_length=40, foreign_key="payments.id")
    seq: int
    status: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=1000)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()


class WebhookEvent(SQLModel, table=True):
    """Every verified gateway webhook, unique per provider and event id."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_webhook_events_event"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    event_id: str = Field(max_length=255)
    event_type: str = Field(max_length=64)
    payment_id: str | None = Field(default=None, max_length=40, index=True)
    gateway_reference: str | None = Field(default=None, max_length=255)
    delivery: str = Field(default="received", max_length=32)
    received_at: datetime = _timestamp()


class Notification(SQLModel, table=True):
    """The outcome of telling the merchant about a payment event."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("payment_id", "event_type", name="uq_notifications_payment_event"),
        # The dashboard's count of recently failed notifications (ledger/dashboard.py).
        Index("ix_notifications_status_updated", "status", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    payment_id: str = Field(max_length=40, foreign_key="payments.id")
    event_type: str = Field(max_length=64)
    status: str = Field(max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class RiskAssessmentRecord(SQLModel, table=True):
    """The fraud score of one payment and the factors behind it, as the workflow received it."""

    __tablename__ = "risk_assessments"
    __table_args__ = (UniqueConstraint("payment_id", name="uq_risk_assessments_payment"),)

    id: int | None = Field(default=None, primary_key=True)
    payment_id: str = Field(max_length=40, foreign_key="payments.id")
    score: int
    # [{"name": ..., "weight": ..., "evidence": {...}}]: the evidence lives inside each factor.
    factors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    model_version: str = Field(max_length=32)
    assessed_at: datetime = _timestamp()


class Merchant(SQLModel, table=True):
    """Who calls the API. ``role`` operator adds the review queue across every merchant."""

    __tablename__ = "merchants"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    role: str = Field(default="merchant", max_length=16)
    created_at: datetime = _timestamp()


class ApiKey(SQLModel, table=True):
    """One API key of a merchant: its public prefix and a salted hash of its secret, never the
    secret itself. A rotated-out key has ``expires_at``; a revoked one has ``revoked_at``."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)  # the key id inside the key's text
    merchant_id: str = Field(max_length=40, foreign_key="merchants.id", index=True)
    prefix: str = Field(max_length=40)
    salt: str = Field(max_length=64)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = _timestamp()
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class RefundRecord(SQLModel, table=True):
    """One refund of a payment; pending and succeeded ones count against the refundable amount."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key", name="uq_refunds_merchant_key"),
        # The reservation sums a payment's refunds by status under the payment's row lock.
        Index("ix_refunds_payment_status", "payment_id", "status"),
    )

    id: str = Field(primary_key=True, max_length=40)
    payment_id: str = Field(max_length=40, foreign_key="payments.id")
    merchant_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64)
    workflow_id: str = Field(max_length=400, unique=True)
    status: str = Field(max_length=16)
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    reason: str | None = Field(default=None, max_length=200)
    refund_metadata: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    gateway: str = Field(max_length=16)
    refund_reference: str | None = Field(default=None, max_length=255, index=True)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class DisputeRecord(SQLModel, table=True):
    """One dispute (chargeback) as the gateway reported it, unique per gateway dispute id."""

    __tablename__ = "disputes"
    __table_args__ = (
        UniqueConstraint("provider", "dispute_reference", name="uq_disputes_reference"),
    )

    id: str = Field(primary_key=True, max_length=40)
    provider: str = Field(max_length=16)
    dispute_reference: str = Field(max_length=255)
    workflow_id: str = Field(max_length=400)
    # None when the gateway named a charge this ledger does not know.
    payment_id: str | None = Field(default=None, max_length=40, foreign_key="payments.id")
    merchant_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=200)
    amount_minor: int | None = Field(default=None, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    evidence_due_by: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # The payment's status when the dispute opened: a won dispute gives it back.
    payment_status_before: str | None = Field(default=None, max_length=32)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class WebhookEndpoint(SQLModel, table=True):
    """A merchant's URL for signed events. The signing secret is sealed with the payload key
    ring (paytide/sealing.py): it has to be usable to sign, so a hash would not do."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    merchant_id: str = Field(max_length=64, index=True)
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="enabled", max_length=16)
    description: str | None = Field(default=None, max_length=200)
    secret_sealed: str = Field(max_length=400)
    # The secret before the last rotation, still signing beside the new one until it expires.
    previous_secret_sealed: str | None = Field(default=None, max_length=400)
    previous_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: pending until delivered, or failed (a dead letter)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_merchant_status", "merchant_id", "status", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=64)
    endpoint_id: str = Field(max_length=40, foreign_key="webhook_endpoints.id")
    merchant_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    # The public object the event carries, as it was when the event happened.
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    # How many times an operator or merchant re-drove it after it failed; names the workflow.
    redrives: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    event_created_at: datetime = _timestamp()
    created_at: datetime = _timestamp(index=True)
    updated_at: datetime = _timestamp()
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class WebhookDeliveryAttempt(SQLModel, table=True):
    """One HTTP try of a delivery: what the receiver answered, how long it took, what failed."""

    __tablename__ = "webhook_delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40, foreign_key="webhook_deliveries.id", index=True)
    attempt: int
    status_code: int | None = None
    latency_ms: int
    error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _timestamp()
