"""The contract of a payment: statuses and the frozen dataclasses that cross Temporal's boundary.

Running histories carry these types. Add fields only with defaults; never rename or retype one.
This module imports nothing of paytide's, so workflows stay deterministic and every layer may
depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class PaymentStatus(StrEnum):
    RECEIVED = "received"
    RISK_CHECK = "risk_check"
    # Risky enough for a human: waits for an operator's decision (or the review deadline).
    IN_REVIEW = "in_review"
    CHARGING = "charging"
    REQUIRES_ACTION = "requires_action"
    AWAITING_WEBHOOK = "awaiting_webhook"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELED = "canceled"
    # The gateway's answer stays unknown after reconciling: an operator must look.
    NEEDS_ATTENTION = "needs_attention"
    # The gateway reported something that contradicts the payment (amount, currency).
    CONFLICTED = "conflicted"
    # After success, written by refund and dispute workflows (the payment workflow has ended).
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    DISPUTE_LOST = "dispute_lost"


TERMINAL_STATUSES = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.BLOCKED, PaymentStatus.CANCELED}
)
# Statuses at which the payment workflow has ended: nothing more happens without an operator.
# Statuses a payment reaches after its own workflow ended in success: refunds and disputes.
AFTER_SUCCESS_STATUSES = frozenset(
    {
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DISPUTED,
        PaymentStatus.DISPUTE_LOST,
    }
)
# Statuses at which the card was charged as paytide asked: refunds and disputes apply.
CAPTURED_STATUSES = frozenset({PaymentStatus.SUCCEEDED}) | AFTER_SUCCESS_STATUSES
CLOSED_STATUSES = TERMINAL_STATUSES | {PaymentStatus.CONFLICTED} | AFTER_SUCCESS_STATUSES


class GatewayName(StrEnum):
    SANDBOX = "sandbox"
    STRIPE = "stripe"
    ADYEN = "adyen"


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class ChargeState(StrEnum):
    """What a gateway says about one charge, in paytide's words."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    # The gateway refused this attempt but says another attempt may work.
    RETRYABLE_FAILURE = "retryable_failure"
    CANCELED = "canceled"
    # The gateway has no charge under this reference or idempotency key.
    NOT_FOUND = "not_found"


def waiting_status(state: ChargeState) -> PaymentStatus | None:
    """The payment's status while the gateway's answer is not final; None once it is."""
    if state is ChargeState.PENDING:
        return PaymentStatus.AWAITING_WEBHOOK
    if state is ChargeState.REQUIRES_ACTION:
        return PaymentStatus.REQUIRES_ACTION
    return None


FINAL_CHARGE_STATES = frozenset(
    {ChargeState.SUCCEEDED, ChargeState.DECLINED, ChargeState.CANCELED, ChargeState.AUTHORIZED}
)


@dataclass(frozen=True, kw_only=True)
class Failure:
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, kw_only=True)
class RiskContext:
    ip_address: str | None = None
    device_id: str | None = None
    country: str | None = None
    city: str | None = None


@dataclass(frozen=True, kw_only=True)
class PaymentRequest:
    """Everything the merchant asked for, validated at the HTTP edge."""

    payment_id: str
    merchant_id: str
    idempotency_key: str
    fingerprint: str
    amount_minor: int
    currency: str
    customer_id: str
    payment_method: str
    order_id: str
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    gateway: GatewayName | None = None
    risk: RiskContext = field(default_factory=RiskContext)
    # Nonce of the HTTP request that started the workflow: tells a first request from a replay.
    request_id: str = ""
    # Gateways to try, in order; the next one is used only when the previous provably did not
    # charge. Empty means [gateway or the default gateway].
    route: list[GatewayName] = field(default_factory=list)
    # The CustomerId search attribute's value (a keyed hash of customer_id, never the id).
    customer_search_key: str = ""
    # Where receipts go. Personal data: only in encrypted payloads, sealed in the ledger, never
    # in search attributes, memo, summaries or logs.
    customer_email: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowSettings:
    """Timing knobs captured at start, so a settings change never rewrites a running history."""

    webhook_timeout_seconds: float = 60.0
    max_webhook_wait_seconds: float = 24 * 3600.0
    max_charge_attempts: int = 3
    charge_retry_backoff_seconds: float = 2.0
    risk_block_score: int = 80
    risk_review_score: int = 70
    review_timeout_seconds: float = 24 * 3600.0
    # How long a payment whose final notification failed waits for an operator's re-drive.
    notification_redrive_seconds: float = 7 * 24 * 3600.0
    default_gateway: GatewayName = GatewayName.SANDBOX
    # How long one gateway HTTP call may take before the activity is retried (same key).
    gateway_call_timeout_seconds: float = 30.0
    # Transport retries of one gateway call before the workflow reconciles with the gateway.
    gateway_max_attempts: int = 6
    # How long a manual-capture authorization is held before it is voided (cards: ~7 days).
    authorization_ttl_seconds: float = 7 * 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class PaymentInput:
    request: PaymentRequest
    settings: WorkflowSettings = field(default_factory=WorkflowSettings)


@dataclass(frozen=True, kw_only=True)
class ChargeRequest:
    payment_id: str
    workflow_id: str
    merchant_id: str
    gateway: GatewayName
    idempotency_key: str
    amount_minor: int
    currency: str
    payment_method: str
    customer_id: str
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # The ledger line the charge activity writes itself when the gateway answers "pending" or
    # "requires action" (status and gateway reference filled in from the answer), so that the
    # answer is on record before the activity reports it and the update needs no local activity
    # after the charge. None: the workflow records it (payments started before this existed).
    record_waiting: Transition | None = None


@dataclass(frozen=True, kw_only=True)
class NextAction:
    type: str
    redirect_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChargeOutcome:
    state: ChargeState
    gateway_reference: str | None = None
    client_secret: str | None = None
    next_action: NextAction | None = None
    failure: Failure | None = None
    amount_minor: int | None = None
    currency: str | None = None
    # For NOT_FOUND: False when the gateway's lookup may lag (search indexes), so "not found"
    # does not prove that no charge exists.
    conclusive: bool = True
    # When the charge activity wrote ChargeRequest.record_waiting: the time it wrote down.
    recorded_at: str | None = None
    # What the gateway says it took from the card, when it says (a succeeded charge or capture);
    # less than ``amount_minor`` after a partial capture.
    amount_captured: int | None = None


@dataclass(frozen=True, kw_only=True)
class ChargeLookup:
    """Find a charge by its gateway reference, or failing that by our idempotency key."""

    gateway: GatewayName
    gateway_reference: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class CancelRequest:
    gateway: GatewayName
    gateway_reference: str
    idempotency_key: str


@dataclass(frozen=True, kw_only=True)
class CaptureRequest:
    gateway: GatewayName
    gateway_reference: str
    idempotency_key: str
    amount_minor: int
    currency: str


class RefundState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RefundRequest:
    gateway: GatewayName
    payment_id: str
    # The payment's charge at the gateway (PaymentIntent id, pspReference, sandbox charge id).
    gateway_reference: str
    idempotency_key: str
    amount_minor: int
    currency: str
    reason: str | None = None
    # Our refund id, sent as metadata / merchant reference so the refund's webhook finds it.
    refund_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RefundOutcome:
    state: RefundState
    refund_reference: str | None = None
    failure: Failure | None = None


@dataclass(frozen=True, kw_only=True)
class RefundLookup:
    """Find a refund by the gateway's refund reference (the only handle every gateway has)."""

    gateway: GatewayName
    refund_reference: str
    # The charge the refund belongs to: some gateways file refunds under it.
    gateway_reference: str | None = None


class DisputeState(StrEnum):
    """Where a dispute stands, in paytide's words."""

    # The merchant may answer with evidence until the due date.
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


FINAL_DISPUTE_STATES = frozenset({DisputeState.WON, DisputeState.LOST})


@dataclass(frozen=True, kw_only=True)
class RefundNotice:
    """What a refund webhook says about one refund."""

    state: RefundState
    refund_reference: str | None = None
    # Our refund id, echoed back by gateways that carry metadata or a merchant reference.
    refund_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    failure: Failure | None = None


@dataclass(frozen=True, kw_only=True)
class DisputeNotice:
    """What a dispute (chargeback) webhook says about one dispute."""

    dispute_reference: str
    state: DisputeState
    amount_minor: int | None = None
    currency: str | None = None
    reason: str | None = None
    # ISO 8601; None when the gateway did not say.
    evidence_due_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class GatewayEvent:
    """A verified gateway webhook, delivered to the payment workflow as a signal.

    A refund or dispute event carries ``refund`` or ``dispute``; it is routed to that workflow,
    never to the payment's, and its ``state`` is the charge's (a refunded or disputed charge
    had succeeded)."""

    provider: GatewayName
    event_id: str
    event_type: str
    state: ChargeState
    gateway_reference: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    failure: Failure | None = None
    # Our own ids, echoed back by gateways that carry metadata; used to find the payment.
    payment_id: str | None = None
    workflow_id: str | None = None
    refund: RefundNotice | None = None
    dispute: DisputeNotice | None = None
    # What the gateway says it captured, when the event says (a succeeded charge or capture).
    amount_captured: int | None = None


@dataclass(frozen=True, kw_only=True)
class RiskFactor:
    name: str
    weight: int
    # Counts, averages and thresholds that made the factor fire: an operator must see why.
    evidence: dict[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RiskAssessment:
    score: int
    factors: list[RiskFactor] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RiskInput:
    request: PaymentRequest


@dataclass(frozen=True, kw_only=True)
class Transition:
    """One status change, written to the ledger (row update + event) and nothing else."""

    payment_id: str
    workflow_id: str
    seq: int
    status: PaymentStatus
    reason: str | None = None
    gateway: GatewayName | None = None
    gateway_reference: str | None = None
    risk: RiskAssessment | None = None
    failure: Failure | None = None
    # Carried by the first transition only, so the ledger row can be created from it.
    request: PaymentRequest | None = None
    # Workflow time of the change (ISO 8601), so ledger and workflow agree on timestamps.
    at: str = ""
    # What was captured, once the payment succeeded: the amount with automatic capture, what the
    # gateway captured with manual capture. Refunds are bounded by it. None keeps the ledger's.
    amount_captured: int | None = None


@dataclass(frozen=True, kw_only=True)
class Admission:
    """The first two transitions and the risk score, written in one local activity and one
    database transaction: each local activity on the way to the charge adds to the time the
    merchant waits for POST /payments."""

    received: Transition
    risk_check: Transition
    # Written in the same transaction when the score is below ``charge_below``, that is when
    # the payment goes straight to the gateway (no review, no block).
    charging: Transition | None = None
    charge_below: int = 0

    def charges_at_once(self, score: int) -> bool:
        return self.charging is not None and score < self.charge_below


@dataclass(frozen=True, kw_only=True)
class PaymentView:
    """The payment as the API shows it, built from workflow state."""

    payment_id: str
    workflow_id: str
    status: PaymentStatus
    amount_minor: int
    currency: str
    customer_id: str
    order_id: str
    capture: CaptureMethod
    gateway: GatewayName | None = None
    gateway_reference: str | None = None
    client_secret: str | None = None
    next_action: NextAction | None = None
    risk_score: int | None = None
    risk_factors: list[RiskFactor] = field(default_factory=list)
    failure: Failure | None = None
    charge_attempts: int = 0
    # When the workflow next asks the gateway (ISO 8601), while it waits for a webhook.
    next_deadline: str | None = None
    created_at: str = ""
    updated_at: str = ""
    # For the receipt on payment.succeeded; public_payment() never shows it.
    customer_email: str | None = None
    # What was captured (None until the payment succeeded); refunds are bounded by it.
    amount_captured: int | None = None


@dataclass(frozen=True, kw_only=True)
class InitiateRequest:
    """Sent by the API with update-with-start; answered once the charge has been initiated."""

    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class InitiateResult:
    payment: PaymentView
    # The request_id of the request that started this payment.
    started_by: str


class ReviewVerdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, kw_only=True)
class ReviewDecision:
    """An operator's decision on a payment in review; sent as the ``review`` update."""

    verdict: ReviewVerdict
    reviewer: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class OperatorAlert:
    payment: PaymentView
    # An event name of workflows/events.py that the operators' channel carries.
    kind: str
    # Why a human must look, in words (the escalation's reason); sent in the alert's ``data``.
    reason: str | None = None
    # Set when the payment ended because a step can never succeed ("admission", "ledger"): the
    # alert counts it in paytide_payments_ended_unrecoverable_total under that step.
    unrecoverable_step: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReconcileRequest:
    """An operator asks the workflow to check with the gateway now instead of waiting."""

    operator: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RetryNotification:
    """An operator re-drives a merchant notification that exhausted its retries."""

    operator: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CapturePayment:
    """Capture an authorized payment; ``amount_minor`` None captures all of it."""

    amount_minor: int | None = None


@dataclass(frozen=True, kw_only=True)
class CancelPayment:
    reason: str = "requested_by_merchant"


@dataclass(frozen=True, kw_only=True)
class NotificationInput:
    payment: PaymentView
    event_type: str
    merchant_id: str


@dataclass(frozen=True, kw_only=True)
class NotificationResult:
    delivered: bool
    status_code: int | None = None
    skipped_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class NotificationFailure:
    payment_id: str
    event_type: str
    error: str
    attempts: int
