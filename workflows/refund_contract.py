"""The contract of a refund: the frozen dataclasses RefundWorkflow and its activities exchange.

Same rules as ``workflows.contract``: add fields only with defaults, never rename or retype one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.contract import Failure, GatewayName, RefundState


@dataclass(frozen=True, kw_only=True)
class RefundSettings:
    """Timing knobs captured at start, so a settings change never rewrites a running history."""

    # How long to wait for the refund webhook before asking the gateway.
    webhook_timeout_seconds: float = 60.0
    # How long a refund may stay unsettled before operators are alerted (it keeps waiting).
    max_wait_seconds: float = 7 * 24 * 3600.0
    gateway_call_timeout_seconds: float = 30.0
    gateway_max_attempts: int = 6


@dataclass(frozen=True, kw_only=True)
class RefundRequestInput:
    """What the merchant asked for, validated at the HTTP edge."""

    refund_id: str
    merchant_id: str
    payment_id: str
    idempotency_key: str
    fingerprint: str
    # None refunds whatever is still refundable when the refund is reserved.
    amount_minor: int | None = None
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Nonce of the HTTP request that started the workflow: tells a first request from a replay.
    request_id: str = ""


@dataclass(frozen=True, kw_only=True)
class RefundInput:
    request: RefundRequestInput
    settings: RefundSettings = field(default_factory=RefundSettings)


@dataclass(frozen=True, kw_only=True)
class RefundView:
    """The refund as the API shows it."""

    refund_id: str
    payment_id: str
    status: RefundState
    amount_minor: int
    currency: str
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    gateway: GatewayName | None = None
    # The gateway's id for the refund (re_..., a pspReference), once it gave one.
    refund_reference: str | None = None
    failure: Failure | None = None
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """Reserve part of a payment's refundable amount for one refund (the serialization point)."""

    request: RefundRequestInput
    workflow_id: str
    at: str = ""


@dataclass(frozen=True, kw_only=True)
class ReservationResult:
    """Accepted with the pending refund and the charge to refund, or refused with a reason."""

    refund: RefundView | None = None
    refusal: Failure | None = None
    # The payment's charge at its gateway.
    gateway: GatewayName | None = None
    gateway_reference: str | None = None
    # What was still refundable before this refund (reported with a refusal).
    refundable_minor: int = 0


@dataclass(frozen=True, kw_only=True)
class RefundInitiate:
    """Sent by the API with update-with-start; answered once the reservation is decided."""

    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class RefundInitiateResult:
    refund: RefundView
    # The request_id of the request that started this refund.
    started_by: str


@dataclass(frozen=True, kw_only=True)
class RefundSettlement:
    """The refund's final word from the gateway, written to the ledger with the payment's status."""

    refund_id: str
    status: RefundState
    refund_reference: str | None = None
    failure: Failure | None = None
    at: str = ""


@dataclass(frozen=True, kw_only=True)
class RefundResult:
    """What RefundWorkflow returns: the refund, or why it was refused before it began."""

    refund: RefundView | None = None
    refusal: Failure | None = None
    refundable_minor: int = 0
    # The request's fingerprint: a replay of a refused refund is checked against it.
    fingerprint: str = ""


@dataclass(frozen=True, kw_only=True)
class RefundNotification:
    refund: RefundView
    event_type: str
    merchant_id: str
