"""`StripeWebhookVerifier`: Stripe-Signature checks with real HMACs, and event-to-signal mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from gateways.base import WebhookRejected
from gateways.stripe import StripeWebhookVerifier
from tests.support.stripe_server import sign
from workflows.contract import (
    ChargeState,
    DisputeNotice,
    DisputeState,
    Failure,
    GatewayEvent,
    GatewayName,
    RefundNotice,
    RefundState,
)

SECRET = "whsec_unit_current"
OLD_SECRET = "whsec_unit_previous"
NOW = 1_750_000_000
TOLERANCE = 300


def intent(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "pi_unit_1",
        "object": "payment_intent",
        "amount": 4200,
        "currency": "eur",
        "status": "succeeded",
        "last_payment_error": None,
        "latest_charge": "ch_unit_1",
        "metadata": {"payment_id": "pay_unit_1", "workflow_id": "payment:demo:key1"},
        **overrides,
    }


def event_body(event_type: str = "payment_intent.succeeded", **intent_overrides: Any) -> bytes:
    event = {
        "id": "evt_unit_1",
        "object": "event",
        "type": event_type,
        "created": NOW,
        "livemode": False,
        "data": {"object": intent(**intent_overrides)},
    }
    return json.dumps(event).encode()


def signed(body: bytes, secret: str = SECRET, timestamp: int = NOW) -> dict[str, str]:
    return {"Stripe-Signature": sign(secret, body, timestamp)}


def verifier(*secrets: str) -> StripeWebhookVerifier:
    return StripeWebhookVerifier(secrets or (SECRET,), TOLERANCE, clock=lambda: float(NOW))


def rejection(headers: dict[str, str], body: bytes, *secrets: str) -> str:
    with pytest.raises(WebhookRejected) as caught:
        verifier(*secrets).verify(headers, body)
    return caught.value.reason


def test_valid_signature_yields_the_event() -> None:
    """A correctly signed payment_intent.succeeded becomes one SUCCEEDED event with our ids."""
    body = event_body()
    assert verifier().verify(signed(body), body) == [
        GatewayEvent(
            provider=GatewayName.STRIPE,
            event_id="evt_unit_1",
            event_type="payment_intent.succeeded",
            state=ChargeState.SUCCEEDED,
            gateway_reference="pi_unit_1",
            amount_minor=4200,
            currency="EUR",
            payment_id="pay_unit_1",
            workflow_id="payment:demo:key1",
        )
    ]


def test_a_partial_capture_event_carries_what_was_received() -> None:
    """payment_intent.succeeded after capturing 1000 of 4200 says amount_captured 1000 (Stripe's
    amount_received); an authorization, not yet captured, says nothing captured."""
    captured = event_body(amount_received=1000)
    held = event_body(
        "payment_intent.amount_capturable_updated", status="requires_capture", amount_received=0
    )

    [succeeded] = verifier().verify(signed(captured), captured)
    [authorized] = verifier().verify(signed(held), held)

    assert (succeeded.amount_minor, succeeded.amount_captured) == (4200, 1000)
    assert (authorized.state, authorized.amount_captured) == (ChargeState.AUTHORIZED, None)


def test_signature_made_by_the_stripe_sdk_is_accepted() -> None:
    """A header built by the SDK's own signer verifies, so our test signer matches Stripe's."""
    body = event_body()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, NOW)
    assert header == sign(SECRET, body, NOW)
    assert len(verifier().verify({"stripe-signature": header}, body)) == 1


def test_wrong_secret_is_a_bad_signature() -> None:
    """A body signed with a secret we do not hold is rejected as bad_signature."""
    body = event_body()
    assert rejection(signed(body, secret="whsec_someone_else"), body) == "bad_signature"


def test_tampered_body_is_a_bad_signature() -> None:
    """Changing one byte after signing breaks the MAC."""
    body = event_body()
    headers = signed(body)
    tampered = body.replace(b"4200", b"4201")
    assert rejection(headers, tampered) == "bad_signature"


def test_stale_timestamp_is_told_apart_from_a_forgery() -> None:
    """An authentic delivery signed outside the tolerance is stale_timestamp, not bad_signature."""
    body = event_body()
    assert rejection(signed(body, timestamp=NOW - TOLERANCE - 1), body) == "stale_timestamp"
    assert rejection(signed(body, timestamp=NOW + TOLERANCE + 1), body) == "stale_timestamp"


def test_timestamp_within_tolerance_is_accepted() -> None:
    """A delivery a little old (retries, clock skew) is still accepted."""
    body = event_body()
    assert len(verifier().verify(signed(body, timestamp=NOW - TOLERANCE + 5), body)) == 1


def test_forged_old_timestamp_is_a_bad_signature() -> None:
    """A wrong MAC with an old timestamp is reported as a forgery, never as merely stale."""
    body = event_body()
    headers = signed(body, secret="whsec_attacker", timestamp=NOW - 10 * TOLERANCE)
    assert rejection(headers, body) == "bad_signature"


def test_rotated_secrets_both_verify() -> None:
    """During a rotation, deliveries signed with the new or the old secret are both accepted."""
    body = event_body()
    for secret in (SECRET, OLD_SECRET):
        events = verifier(SECRET, OLD_SECRET).verify(signed(body, secret=secret), body)
        assert [e.event_id for e in events] == ["evt_unit_1"]


def test_header_with_one_signature_per_secret_verifies() -> None:
    """Stripe sends several v1 entries while a secret rolls; one matching entry is enough."""
    body = event_body()
    ours = sign(SECRET, body, NOW).split(",")[1]
    theirs = sign("whsec_other_endpoint", body, NOW).split(",")[1]
    header = {"Stripe-Signature": f"t={NOW},{theirs},{ours}"}
    assert len(verifier().verify(header, body)) == 1


def test_missing_header_is_rejected() -> None:
    """No Stripe-Signature header at all is missing_signature."""
    assert rejection({}, event_body()) == "missing_signature"
    assert rejection({"Stripe-Signature": ""}, event_body()) == "missing_signature"


@pytest.mark.parametrize("header", [f"v1={'0' * 64}", f"t=abc,v1={'0' * 64}", f"t={NOW},t={NOW}"])
def test_unparseable_header_is_rejected(header: str) -> None:
    """A header without exactly one numeric timestamp is malformed_signature."""
    assert rejection({"Stripe-Signature": header}, event_body()) == "malformed_signature"


def test_signed_garbage_is_a_malformed_payload() -> None:
    """An authentic body that is not a Stripe event is malformed_payload, checked after the MAC."""
    for body in (
        b"not json",
        b"[]",
        b'{"id": "evt_1"}',
        json.dumps({"id": 1, "type": "x"}).encode(),
    ):
        assert rejection(signed(body), body) == "malformed_payload"


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"id": "evt_1", "created": ' + b"9" * 5000 + b"}"],
    ids=["deep", "long-number"],
)
def test_signed_hostile_json_is_a_malformed_payload(body: bytes) -> None:
    """An authentic body nested 100,000 deep or with a 5,000-digit number is malformed_payload."""
    assert rejection(signed(body), body) == "malformed_payload"


def test_payment_intent_event_without_an_intent_is_malformed() -> None:
    """A PaymentIntent event whose data.object is missing cannot be mapped and is rejected."""
    body = json.dumps({"id": "evt_2", "type": "payment_intent.succeeded", "data": {}}).encode()
    assert rejection(signed(body), body) == "malformed_payload"


def test_non_utf8_body_is_rejected() -> None:
    """Bytes that are not UTF-8 cannot carry a Stripe signature."""
    body = b"\xff\xfe" + event_body()
    assert rejection(signed(body), body) == "bad_signature"


@pytest.mark.parametrize("event_type", ["customer.created", "charge.refunded"])
def test_unhandled_event_types_are_acknowledged_and_ignored(event_type: str) -> None:
    """Authentic events paytide does not handle (or a charge.refunded without its refund list)
    map to no signals, and raise nothing."""
    body = event_body(event_type)
    assert verifier().verify(signed(body), body) == []


def object_event(event_type: str, obj: dict[str, Any], event_id: str = "evt_unit_9") -> bytes:
    event = {"id": event_id, "object": "event", "type": event_type, "created": NOW}
    return json.dumps({**event, "data": {"object": obj}}).encode()


def stripe_refund(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "re_unit_1",
        "object": "refund",
        "amount": 1500,
        "currency": "eur",
        "status": "succeeded",
        "payment_intent": "pi_unit_1",
        "failure_reason": None,
        "metadata": {"payment_id": "pay_unit_1", "refund_id": "ref_unit_1"},
        **overrides,
    }


@pytest.mark.parametrize("event_type", ["refund.updated", "charge.refund.updated"])
def test_refund_events_carry_our_refund_id_and_the_intent(event_type: str) -> None:
    """A Refund object becomes a refund event: our refund id from metadata, Stripe's refund id,
    the PaymentIntent as the charge reference, the amount in minor units."""
    body = object_event(event_type, stripe_refund())
    [event] = verifier().verify(signed(body), body)
    assert event.refund == RefundNotice(
        state=RefundState.SUCCEEDED,
        refund_reference="re_unit_1",
        refund_id="ref_unit_1",
        amount_minor=1500,
        currency="EUR",
    )
    assert (event.gateway_reference, event.payment_id) == ("pi_unit_1", "pay_unit_1")


def test_failed_refund_event_carries_stripes_reason() -> None:
    """refund.failed: FAILED with Stripe's failure_reason as the code."""
    body = object_event(
        "refund.failed", stripe_refund(status="failed", failure_reason="expired_or_canceled_card")
    )
    [event] = verifier().verify(signed(body), body)
    assert event.refund is not None
    assert event.refund.state is RefundState.FAILED
    assert event.refund.failure is not None
    assert event.refund.failure.code == "expired_or_canceled_card"


def test_charge_refunded_yields_one_event_per_listed_refund() -> None:
    """charge.refunded with its refund list: one event per refund, each with its own event id."""
    charge = {
        "id": "ch_unit_1",
        "object": "charge",
        "payment_intent": "pi_unit_1",
        "refunds": {
            "object": "list",
            "data": [stripe_refund(), stripe_refund(id="re_unit_2", metadata={})],
        },
    }
    body = object_event("charge.refunded", charge)
    events = verifier().verify(signed(body), body)
    assert [e.event_id for e in events] == ["evt_unit_9:re_unit_1", "evt_unit_9:re_unit_2"]
    assert [e.refund.refund_reference for e in events if e.refund] == ["re_unit_1", "re_unit_2"]
    assert {e.gateway_reference for e in events} == {"pi_unit_1"}


def test_a_refund_event_without_a_readable_refund_is_rejected() -> None:
    """A refund event whose status paytide cannot read is malformed (400), never a guess."""
    body = object_event("refund.updated", stripe_refund(status="teleported"))
    assert rejection(signed(body), body) == "malformed_payload"


@pytest.mark.parametrize(
    ("event_type", "status", "state"),
    [
        ("charge.dispute.created", "needs_response", DisputeState.NEEDS_RESPONSE),
        ("charge.dispute.created", "warning_needs_response", DisputeState.NEEDS_RESPONSE),
        ("charge.dispute.updated", "under_review", DisputeState.UNDER_REVIEW),
        ("charge.dispute.closed", "won", DisputeState.WON),
        ("charge.dispute.closed", "warning_closed", DisputeState.WON),
        ("charge.dispute.closed", "lost", DisputeState.LOST),
    ],
)
def test_dispute_events_map_stripes_statuses(
    event_type: str, status: str, state: DisputeState
) -> None:
    """A Dispute object becomes a dispute event keyed by Stripe's dispute id, about the intent,
    with the evidence due date as ISO 8601."""
    dispute = {
        "id": "dp_unit_1",
        "object": "dispute",
        "amount": 4200,
        "currency": "eur",
        "reason": "fraudulent",
        "status": status,
        "charge": "ch_unit_1",
        "payment_intent": "pi_unit_1",
        "evidence_details": {"due_by": NOW + 86400},
    }
    body = object_event(event_type, dispute)
    [event] = verifier().verify(signed(body), body)
    assert event.dispute == DisputeNotice(
        dispute_reference="dp_unit_1",
        state=state,
        amount_minor=4200,
        currency="EUR",
        reason="fraudulent",
        evidence_due_by="2025-06-16T15:06:40+00:00",
    )
    assert event.gateway_reference == "pi_unit_1"


def test_a_dispute_event_with_an_unknown_status_is_rejected() -> None:
    """A dispute status paytide does not know is malformed (400): a retry may bring a fix."""
    body = object_event("charge.dispute.updated", {"id": "dp_1", "status": "mystery"})
    assert rejection(signed(body), body) == "malformed_payload"


@pytest.mark.parametrize(
    ("event_type", "status", "state"),
    [
        ("payment_intent.succeeded", "succeeded", ChargeState.SUCCEEDED),
        ("payment_intent.processing", "processing", ChargeState.PENDING),
        ("payment_intent.requires_action", "requires_action", ChargeState.REQUIRES_ACTION),
        ("payment_intent.canceled", "canceled", ChargeState.CANCELED),
        ("payment_intent.amount_capturable_updated", "requires_capture", ChargeState.AUTHORIZED),
    ],
)
def test_payment_intent_events_map_to_charge_states(
    event_type: str, status: str, state: ChargeState
) -> None:
    """Each PaymentIntent event type becomes the matching ChargeState, with no failure."""
    body = event_body(event_type, status=status)
    (event,) = verifier().verify(signed(body), body)
    assert (event.event_type, event.state, event.failure) == (event_type, state, None)
    assert event.gateway_reference == "pi_unit_1"


def test_payment_failed_is_a_decline_with_the_issuer_reason() -> None:
    """payment_intent.payment_failed is DECLINED, with decline_code preferred over code."""
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    body = event_body(
        "payment_intent.payment_failed", status="requires_payment_method", last_payment_error=error
    )
    (event,) = verifier().verify(signed(body), body)
    assert event.state is ChargeState.DECLINED
    assert event.failure == Failure(
        code="insufficient_funds", message="Your card has insufficient funds.", retryable=False
    )


def test_payment_failed_with_processing_error_is_retryable() -> None:
    """A processing_error failure says a new attempt may work: RETRYABLE_FAILURE."""
    error = {"type": "card_error", "code": "processing_error", "message": "Try again."}
    body = event_body(
        "payment_intent.payment_failed", status="requires_payment_method", last_payment_error=error
    )
    (event,) = verifier().verify(signed(body), body)
    assert event.state is ChargeState.RETRYABLE_FAILURE
    assert event.failure is not None and event.failure.retryable
    assert event.failure.code == "processing_error"


def test_payment_failed_reads_an_expanded_latest_charge() -> None:
    """Without last_payment_error, the failure code comes from an expanded latest_charge."""
    charge = {"id": "ch_unit_2", "object": "charge", "failure_code": "expired_card"}
    body = event_body(
        "payment_intent.payment_failed", status="requires_payment_method", latest_charge=charge
    )
    (event,) = verifier().verify(signed(body), body)
    assert event.state is ChargeState.DECLINED
    assert event.failure is not None and event.failure.code == "expired_card"


def test_verifier_needs_a_secret() -> None:
    """Building a verifier without any (non-blank) secret fails loudly at start-up."""
    with pytest.raises(ValueError, match="secret"):
        StripeWebhookVerifier(["", " "])
