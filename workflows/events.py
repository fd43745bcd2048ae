"""The names of the events paytide sends, and which channel carries each: one table for all.

A merchant's callback (``PAYTIDE_MERCHANT_CALLBACK_URL``), its webhook endpoints
(``POST /webhook-endpoints``), the operators' alert channel (``PAYTIDE_OPS_ALERT_URL``) and the
customer's receipts all name an event the same way; a channel that does not carry an event never
renames it into another. The API's list of subscribable events, the fan-out's filter, the
workflows' event names and docs/webhooks.md's table are this table (tests/unit/test_events.py).

Histories carry these names as plain strings, so a name is never changed once released.
"""

from __future__ import annotations

from enum import StrEnum

from workflows.contract import PaymentStatus


class EventType(StrEnum):
    PAYMENT_IN_REVIEW = "payment.in_review"
    PAYMENT_REQUIRES_ACTION = "payment.requires_action"
    PAYMENT_AUTHORIZED = "payment.authorized"
    PAYMENT_NEEDS_ATTENTION = "payment.needs_attention"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_BLOCKED = "payment.blocked"
    PAYMENT_CANCELED = "payment.canceled"
    PAYMENT_CONFLICTED = "payment.conflicted"
    # The ledger refused the payment before it existed: nobody but the operators can act.
    PAYMENT_NOT_ADMITTED = "payment.not_admitted"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    DISPUTE_CREATED = "dispute.created"
    DISPUTE_UPDATED = "dispute.updated"
    DISPUTE_EVIDENCE_REMINDER = "dispute.evidence_reminder"
    DISPUTE_WON = "dispute.won"
    DISPUTE_LOST = "dispute.lost"
    DISPUTE_STILL_OPEN = "dispute.still_open"
    WEBHOOK_DEAD_LETTER = "webhook.dead_letter"


class Channel(StrEnum):
    CALLBACK = "callback"
    ENDPOINTS = "endpoints"
    OPERATORS = "operators"
    RECEIPT = "receipt"


_CB, _EP, _OPS, _RCPT = Channel.CALLBACK, Channel.ENDPOINTS, Channel.OPERATORS, Channel.RECEIPT

# Which channels carry each event. The callback carries what a payment, refund or dispute
# reached (it never carried intermediate statuses); endpoints may subscribe to every event about
# the merchant's own payments; operators hear what needs a human.
CHANNELS: dict[EventType, frozenset[Channel]] = {
    EventType.PAYMENT_IN_REVIEW: frozenset({_EP, _OPS}),
    EventType.PAYMENT_REQUIRES_ACTION: frozenset({_EP}),
    EventType.PAYMENT_AUTHORIZED: frozenset({_CB, _EP}),
    EventType.PAYMENT_NEEDS_ATTENTION: frozenset({_EP, _OPS}),
    EventType.PAYMENT_SUCCEEDED: frozenset({_CB, _EP, _RCPT}),
    EventType.PAYMENT_FAILED: frozenset({_CB, _EP}),
    EventType.PAYMENT_BLOCKED: frozenset({_CB, _EP}),
    EventType.PAYMENT_CANCELED: frozenset({_CB, _EP}),
    EventType.PAYMENT_CONFLICTED: frozenset({_CB, _EP, _OPS}),
    EventType.PAYMENT_NOT_ADMITTED: frozenset({_OPS}),
    EventType.REFUND_SUCCEEDED: frozenset({_CB, _EP, _RCPT}),
    EventType.REFUND_FAILED: frozenset({_CB, _EP}),
    EventType.DISPUTE_CREATED: frozenset({_CB, _EP, _OPS}),
    EventType.DISPUTE_UPDATED: frozenset({_CB, _EP}),
    EventType.DISPUTE_EVIDENCE_REMINDER: frozenset({_CB, _EP}),
    EventType.DISPUTE_WON: frozenset({_CB, _EP, _OPS}),
    EventType.DISPUTE_LOST: frozenset({_CB, _EP, _OPS}),
    EventType.DISPUTE_STILL_OPEN: frozenset({_OPS}),
    EventType.WEBHOOK_DEAD_LETTER: frozenset({_OPS}),
}


def carried_by(channel: Channel) -> tuple[EventType, ...]:
    """The events ``channel`` carries, in the table's order."""
    return tuple(event for event in EventType if channel in CHANNELS[event])


# What a merchant's endpoint may subscribe to (api/schemas.py's list is checked against it).
ENDPOINT_EVENTS = carried_by(Channel.ENDPOINTS)
RECEIPT_EVENTS = frozenset(carried_by(Channel.RECEIPT))

# The event a payment's status sends, where it sends one.
STATUS_EVENTS: dict[PaymentStatus, EventType] = {
    PaymentStatus.IN_REVIEW: EventType.PAYMENT_IN_REVIEW,
    PaymentStatus.REQUIRES_ACTION: EventType.PAYMENT_REQUIRES_ACTION,
    PaymentStatus.AUTHORIZED: EventType.PAYMENT_AUTHORIZED,
    PaymentStatus.NEEDS_ATTENTION: EventType.PAYMENT_NEEDS_ATTENTION,
    PaymentStatus.SUCCEEDED: EventType.PAYMENT_SUCCEEDED,
    PaymentStatus.FAILED: EventType.PAYMENT_FAILED,
    PaymentStatus.BLOCKED: EventType.PAYMENT_BLOCKED,
    PaymentStatus.CANCELED: EventType.PAYMENT_CANCELED,
    PaymentStatus.CONFLICTED: EventType.PAYMENT_CONFLICTED,
}
