"""The gateway contract: sandbox, Stripe and Adyen adapters behave alike against their servers."""

from __future__ import annotations

import uuid

import pytest

from gateways.base import GatewayUnavailable
from tests.contract.harness import GatewayHarness, Scenario
from workflows.contract import (
    CaptureMethod,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    ChargeState,
    RefundLookup,
    RefundRequest,
    RefundState,
)


def charge_request(
    harness: GatewayHarness, scenario: Scenario, **overrides: object
) -> ChargeRequest:
    workflow_id = f"payment:contract:{uuid.uuid4().hex[:12]}"
    values: dict[str, object] = {
        "payment_id": f"pay_{uuid.uuid4().hex[:20]}",
        "workflow_id": workflow_id,
        "merchant_id": "contract",
        "gateway": harness.gateway.name,
        "idempotency_key": f"{workflow_id}/charge/1",
        "amount_minor": 4200,
        "currency": "EUR",
        "payment_method": harness.payment_method(scenario),
        "customer_id": "cus_contract",
        "capture": CaptureMethod.AUTOMATIC,
        **overrides,
    }
    return ChargeRequest(**values)  # type: ignore[arg-type]


async def settled(harness: GatewayHarness, outcome: ChargeOutcome) -> ChargeState:
    """Complete a charge on the server; return the state its signed webhook announces, as an
    automatic-capture payment reads it (an authorization then means success: Adyen says only
    AUTHORISATION; workflows/payment.py reads it the same way)."""
    assert outcome.gateway_reference is not None
    headers, body = await harness.settle(outcome.gateway_reference)
    events = harness.verifier.verify(headers, body)
    matching = [e for e in events if e.gateway_reference == outcome.gateway_reference]
    assert matching, f"no webhook event for {outcome.gateway_reference}: {events}"
    state = matching[-1].state
    return ChargeState.SUCCEEDED if state is ChargeState.AUTHORIZED else state


async def test_ok_charge_settles_by_webhook(harness: GatewayHarness) -> None:
    """A charge that settles later is pending at once; then a signed webhook says succeeded."""
    outcome = await harness.gateway.charge(charge_request(harness, Scenario.OK))
    assert outcome.state in (ChargeState.PENDING, ChargeState.SUCCEEDED)
    assert outcome.gateway_reference
    assert await settled(harness, outcome) is ChargeState.SUCCEEDED


async def test_decline_is_an_outcome_with_a_code(harness: GatewayHarness) -> None:
    """A decline comes back as a value with the gateway's reason, not as an exception."""
    outcome = await harness.gateway.charge(charge_request(harness, Scenario.DECLINE))
    assert outcome.state is ChargeState.DECLINED
    assert outcome.failure is not None and outcome.failure.code
    assert outcome.failure.retryable is False


async def test_customer_action_carries_what_the_client_needs(harness: GatewayHarness) -> None:
    """3-D Secure: requires_action with a next action; completing it succeeds by webhook."""
    outcome = await harness.gateway.charge(charge_request(harness, Scenario.ACTION))
    assert outcome.state is ChargeState.REQUIRES_ACTION
    assert outcome.next_action is not None
    assert await settled(harness, outcome) is ChargeState.SUCCEEDED


async def test_transient_errors_retry_with_the_same_key_and_charge_once(
    harness: GatewayHarness,
) -> None:
    """503s raise GatewayUnavailable; retrying the same request creates exactly one charge."""
    request = charge_request(harness, Scenario.FLAKY)
    for _ in range(2):
        with pytest.raises(GatewayUnavailable):
            await harness.gateway.charge(request)
    outcome = await harness.gateway.charge(request)
    again = await harness.gateway.charge(request)  # a retried activity after a lost answer
    assert outcome.gateway_reference == again.gateway_reference
    assert await harness.charges_created(request.idempotency_key) == 1


async def test_unavailable_gateway_creates_nothing(harness: GatewayHarness) -> None:
    """A gateway answering 503 before processing has no charge under the key afterwards."""
    request = charge_request(harness, Scenario.UNAVAILABLE)
    with pytest.raises(GatewayUnavailable):
        await harness.gateway.charge(request)
    assert await harness.charges_created(request.idempotency_key) == 0


async def test_status_lookup_finds_the_charge(harness: GatewayHarness) -> None:
    """Reconciliation by gateway reference returns the charge's current state."""
    outcome = await harness.gateway.charge(charge_request(harness, Scenario.SUCCEED_AT_ONCE))
    assert outcome.state is ChargeState.SUCCEEDED
    found = await harness.gateway.retrieve(
        ChargeLookup(gateway=harness.gateway.name, gateway_reference=outcome.gateway_reference)
    )
    assert found.state is ChargeState.SUCCEEDED
    assert found.gateway_reference == outcome.gateway_reference


async def test_refund_of_a_succeeded_charge(harness: GatewayHarness) -> None:
    """A succeeded charge can be refunded, idempotently under its refund key, and the refund can
    be looked up by its reference."""
    request = charge_request(harness, Scenario.SUCCEED_AT_ONCE)
    outcome = await harness.gateway.charge(request)
    assert outcome.gateway_reference is not None
    refund = RefundRequest(
        gateway=harness.gateway.name,
        payment_id=request.payment_id,
        gateway_reference=outcome.gateway_reference,
        idempotency_key=f"refund-{uuid.uuid4().hex}",
        amount_minor=1000,
        currency="EUR",
        reason="requested_by_customer",
    )
    first = await harness.gateway.refund(refund)
    second = await harness.gateway.refund(refund)
    assert first.state in (RefundState.PENDING, RefundState.SUCCEEDED)
    assert first.refund_reference
    assert second.refund_reference == first.refund_reference
    looked_up = await harness.gateway.retrieve_refund(
        RefundLookup(gateway=harness.gateway.name, refund_reference=first.refund_reference)
    )
    # Never FAILED for a refund that was taken; PENDING where the gateway cannot tell (Adyen).
    assert looked_up.state in (RefundState.PENDING, RefundState.SUCCEEDED)
    assert looked_up.refund_reference == first.refund_reference
