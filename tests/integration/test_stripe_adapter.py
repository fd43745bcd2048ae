"""`StripeGateway` details beyond the contract suite, against the Stripe-shaped server over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateways.base import (
    GatewayRateLimited,
    GatewayRequestError,
    GatewayUnavailable,
)
from gateways.stripe import IDEMPOTENCY_METADATA_KEY, StripeGateway, StripeWebhookVerifier
from tests.support import stripe_server as tokens
from tests.support.serve import bound_socket, serve, url_of
from tests.support.stripe_server import FakeStripe, StripeServerConfig, sign
from tests.support.webhook_recorder import WebhookRecorder
from workflows.contract import (
    CancelRequest,
    CaptureMethod,
    CaptureRequest,
    ChargeLookup,
    ChargeRequest,
    ChargeState,
    GatewayName,
    RefundLookup,
    RefundRequest,
    RefundState,
)

API_KEY = "sk_test_integration"
WEBHOOK_SECRET = "whsec_integration"
SETTLE_AFTER = 0.1


@dataclass
class Stack:
    server: FakeStripe
    url: str
    gateway: StripeGateway
    verifier: StripeWebhookVerifier
    recorder: WebhookRecorder


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    recorder = WebhookRecorder()
    async with serve(recorder.app) as receiver_url:
        server = FakeStripe(
            StripeServerConfig(
                api_key=API_KEY,
                webhook_secret=WEBHOOK_SECRET,
                webhook_url=f"{receiver_url}/webhooks",
                settle_after=SETTLE_AFTER,
                retry_after_seconds=7,
            )
        )
        async with serve(server.app) as url, StripeGateway(API_KEY, url) as gateway:
            verifier = StripeWebhookVerifier([WEBHOOK_SECRET])
            yield Stack(server, url, gateway, verifier, recorder)


def charge(payment_method: str, **overrides: object) -> ChargeRequest:
    workflow_id = f"payment:it:{uuid.uuid4().hex[:12]}"
    values: dict[str, object] = {
        "payment_id": f"pay_{uuid.uuid4().hex[:16]}",
        "workflow_id": workflow_id,
        "merchant_id": "merchant-it",
        "gateway": GatewayName.STRIPE,
        "idempotency_key": f"{workflow_id}/charge/1",
        "amount_minor": 4200,
        "currency": "EUR",
        "payment_method": payment_method,
        "customer_id": "cus_it",
        **overrides,
    }
    return ChargeRequest(**values)  # type: ignore[arg-type]


def keys_seen(server: FakeStripe, path: str) -> list[str | None]:
    return [key for seen, key in server.posts if seen == path]


async def test_card_error_is_a_decline_with_the_decline_code(stack: Stack) -> None:
    """Stripe's 402 CardError comes back as a DECLINED outcome carrying decline_code."""
    outcome = await stack.gateway.charge(charge(tokens.DECLINED))
    assert outcome.state is ChargeState.DECLINED
    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.retryable) == ("generic_decline", False)
    assert outcome.gateway_reference in stack.server.payment_intents
    assert (outcome.amount_minor, outcome.currency) == (4200, "EUR")
    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, gateway_reference=outcome.gateway_reference)
    )
    assert found.state is ChargeState.DECLINED
    assert found.failure is not None and found.failure.code == "generic_decline"


async def test_lookup_by_key_that_finds_nothing_is_inconclusive(stack: Stack) -> None:
    """By key, retrieve searches PaymentIntents: a match answers its state; no match is NOT_FOUND
    with conclusive=False, because Stripe Search lags and a miss proves nothing."""
    request = charge(tokens.VISA)
    created = await stack.gateway.charge(request)

    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, idempotency_key=request.idempotency_key)
    )
    missing = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, idempotency_key=f"{request.workflow_id}/charge/9")
    )

    assert (found.state, found.gateway_reference) == (
        ChargeState.SUCCEEDED,
        created.gateway_reference,
    )
    assert (missing.state, missing.conclusive) == (ChargeState.NOT_FOUND, False)


async def test_processing_error_is_a_retryable_failure(stack: Stack) -> None:
    """processing_error is RETRYABLE_FAILURE; the same key replays it, a new key tries anew."""
    request = charge(tokens.PROCESSING_ERROR)
    first = await stack.gateway.charge(request)
    assert first.state is ChargeState.RETRYABLE_FAILURE
    assert first.failure is not None
    assert (first.failure.code, first.failure.retryable) == ("processing_error", True)
    replayed = await stack.gateway.charge(request)
    assert replayed == first
    assert stack.server.created_per_key[request.idempotency_key] == 1
    retry_key = request.idempotency_key.replace("/charge/1", "/charge/2")
    second = await stack.gateway.charge(charge(tokens.VISA, idempotency_key=retry_key))
    assert second.state is ChargeState.SUCCEEDED
    assert second.gateway_reference != first.gateway_reference


async def test_rate_limit_carries_retry_after(stack: Stack) -> None:
    """A 429 raises GatewayRateLimited with the Retry-After seconds; nothing is created."""
    request = charge(tokens.RATE_LIMITED)
    with pytest.raises(GatewayRateLimited) as caught:
        await stack.gateway.charge(request)
    assert caught.value.retryable
    assert caught.value.retry_after == 7.0
    assert stack.server.created_per_key[request.idempotency_key] == 0


async def test_lock_timeout_is_unavailable_not_rate_limited(stack: Stack) -> None:
    """A 429 lock_timeout is retryable GatewayUnavailable, not a rate limit."""
    with pytest.raises(GatewayUnavailable) as caught:
        await stack.gateway.charge(charge(tokens.LOCK_TIMEOUT))
    assert not isinstance(caught.value, GatewayRateLimited)
    assert caught.value.retryable


async def test_bad_api_key_is_not_retryable(stack: Stack) -> None:
    """A 401 from Stripe is GatewayRequestError: retrying with the same key cannot help."""
    async with StripeGateway("sk_test_wrong", stack.url) as gateway:
        with pytest.raises(GatewayRequestError) as caught:
            await gateway.charge(charge(tokens.VISA))
    assert not caught.value.retryable
    assert "AuthenticationError" in str(caught.value)
    assert "sk_test_wrong" not in str(caught.value)


async def test_reused_key_with_other_parameters_is_a_request_error(stack: Stack) -> None:
    """Same idempotency key, different amount: Stripe's idempotency_error, not retryable."""
    request = charge(tokens.VISA)
    await stack.gateway.charge(request)
    with pytest.raises(GatewayRequestError, match="IdempotencyError"):
        await stack.gateway.charge(charge(tokens.VISA, idempotency_key=request.idempotency_key))


async def test_charge_sends_what_stripe_expects(stack: Stack) -> None:
    """The PaymentIntent has the amount, lower-case currency, capture method and our metadata."""
    request = charge(tokens.VISA, description="order 17", metadata={"order_id": "17"})
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    intent = stack.server.payment_intents[outcome.gateway_reference]
    assert (intent["amount"], intent["currency"], intent["capture_method"]) == (
        4200,
        "eur",
        "automatic",
    )
    assert intent["description"] == "order 17"
    assert intent["metadata"] == {
        "order_id": "17",
        "payment_id": request.payment_id,
        "workflow_id": request.workflow_id,
        "merchant_id": "merchant-it",
        "customer_id": "cus_it",
        IDEMPOTENCY_METADATA_KEY: request.idempotency_key,
    }
    assert (outcome.state, outcome.currency, outcome.client_secret) == (
        ChargeState.SUCCEEDED,
        "EUR",
        None,
    )


async def test_every_post_carries_the_callers_idempotency_key(stack: Stack) -> None:
    """Charge, capture, cancel and refund send exactly the key given, so a retry never repeats."""
    request = charge(tokens.VISA, capture=CaptureMethod.MANUAL)
    authorized = await stack.gateway.charge(request)
    assert authorized.gateway_reference is not None
    reference = authorized.gateway_reference
    await stack.gateway.capture(
        CaptureRequest(
            gateway=GatewayName.STRIPE,
            gateway_reference=reference,
            idempotency_key=f"{request.workflow_id}/capture/1",
            amount_minor=4200,
            currency="EUR",
        )
    )
    await stack.gateway.refund(
        RefundRequest(
            gateway=GatewayName.STRIPE,
            payment_id=request.payment_id,
            gateway_reference=reference,
            idempotency_key=f"{request.workflow_id}/refund/1",
            amount_minor=100,
            currency="EUR",
        )
    )
    await stack.gateway.cancel(
        CancelRequest(
            gateway=GatewayName.STRIPE,
            gateway_reference=reference,
            idempotency_key=f"{request.workflow_id}/cancel/1",
        )
    )
    ours = [(path, key) for path, key in stack.server.posts if key and request.workflow_id in key]
    assert ours == [
        ("/v1/payment_intents", request.idempotency_key),
        (f"/v1/payment_intents/{reference}/capture", f"{request.workflow_id}/capture/1"),
        ("/v1/refunds", f"{request.workflow_id}/refund/1"),
        (f"/v1/payment_intents/{reference}/cancel", f"{request.workflow_id}/cancel/1"),
    ]


async def test_manual_capture_authorizes_then_captures(stack: Stack) -> None:
    """capture=manual: requires_capture is AUTHORIZED; capture makes it SUCCEEDED, once, with
    what was captured."""
    request = charge(tokens.VISA, capture=CaptureMethod.MANUAL)
    authorized = await stack.gateway.charge(request)
    assert authorized.state is ChargeState.AUTHORIZED
    assert authorized.gateway_reference is not None
    capture = CaptureRequest(
        gateway=GatewayName.STRIPE,
        gateway_reference=authorized.gateway_reference,
        idempotency_key=f"{request.workflow_id}/capture/1",
        amount_minor=3000,
        currency="EUR",
    )
    captured = await stack.gateway.capture(capture)
    again = await stack.gateway.capture(capture)  # a retried activity: replayed, not repeated
    assert captured.state is ChargeState.SUCCEEDED
    assert again == captured
    assert authorized.amount_captured is None
    assert captured.amount_captured == 3000
    intent = stack.server.payment_intents[authorized.gateway_reference]
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 3000)
    late = await stack.gateway.capture(
        CaptureRequest(
            gateway=GatewayName.STRIPE,
            gateway_reference=authorized.gateway_reference,
            idempotency_key=f"{request.workflow_id}/capture/2",
            amount_minor=3000,
            currency="EUR",
        )
    )
    assert late.state is ChargeState.SUCCEEDED  # already captured: its state, not an error


async def test_cancel_an_authorization(stack: Stack) -> None:
    """An authorized PaymentIntent cancels to CANCELED; retrieve agrees."""
    request = charge(tokens.VISA, capture=CaptureMethod.MANUAL)
    authorized = await stack.gateway.charge(request)
    assert authorized.gateway_reference is not None
    canceled = await stack.gateway.cancel(
        CancelRequest(
            gateway=GatewayName.STRIPE,
            gateway_reference=authorized.gateway_reference,
            idempotency_key=f"{request.workflow_id}/cancel/1",
        )
    )
    assert canceled.state is ChargeState.CANCELED
    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, gateway_reference=authorized.gateway_reference)
    )
    assert found.state is ChargeState.CANCELED


async def test_cancel_after_success_returns_the_current_state(stack: Stack) -> None:
    """Too late to cancel: the outcome is the PaymentIntent's state (SUCCEEDED), not an error."""
    request = charge(tokens.VISA)
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    result = await stack.gateway.cancel(
        CancelRequest(
            gateway=GatewayName.STRIPE,
            gateway_reference=outcome.gateway_reference,
            idempotency_key=f"{request.workflow_id}/cancel/1",
        )
    )
    assert result.state is ChargeState.SUCCEEDED
    assert result.gateway_reference == outcome.gateway_reference


async def test_unknown_payment_intent_is_not_found(stack: Stack) -> None:
    """A 404 on retrieve or cancel is NOT_FOUND, an answer rather than an error."""
    lookup = ChargeLookup(gateway=GatewayName.STRIPE, gateway_reference="pi_does_not_exist")
    assert (await stack.gateway.retrieve(lookup)).state is ChargeState.NOT_FOUND
    cancel = CancelRequest(
        gateway=GatewayName.STRIPE, gateway_reference="pi_does_not_exist", idempotency_key="k-404"
    )
    assert (await stack.gateway.cancel(cancel)).state is ChargeState.NOT_FOUND


async def test_lookup_by_idempotency_key_searches_metadata(stack: Stack) -> None:
    """Without a reference, the charge is found by the key stored in its metadata."""
    request = charge(tokens.VISA, idempotency_key=f"it-{uuid.uuid4().hex}/o'brien\\1")
    outcome = await stack.gateway.charge(request)
    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, idempotency_key=request.idempotency_key)
    )
    assert (found.state, found.gateway_reference) == (
        ChargeState.SUCCEEDED,
        outcome.gateway_reference,
    )
    missing = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, idempotency_key=f"never-{uuid.uuid4().hex}")
    )
    assert missing.state is ChargeState.NOT_FOUND


async def test_three_d_secure_carries_client_secret_and_redirect(stack: Stack) -> None:
    """requires_action comes with the client_secret and the redirect URL the customer needs."""
    outcome = await stack.gateway.charge(charge(tokens.THREE_DS))
    assert outcome.state is ChargeState.REQUIRES_ACTION
    assert outcome.client_secret and outcome.client_secret.startswith(
        f"{outcome.gateway_reference}_secret_"
    )
    assert outcome.next_action is not None
    assert outcome.next_action.type == "redirect_to_url"
    assert outcome.next_action.redirect_url and "/3d_secure_2/" in outcome.next_action.redirect_url


async def test_async_payment_settles_by_a_signed_webhook(stack: Stack) -> None:
    """A processing PaymentIntent settles by itself and its delivered webhook verifies."""
    request = charge(tokens.ASYNC)
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.PENDING
    delivered = await stack.recorder.wait_for(
        lambda w: w.json()["data"]["object"]["id"] == outcome.gateway_reference
    )
    (event,) = stack.verifier.verify(delivered.headers, delivered.body)
    assert (event.state, event.payment_id, event.workflow_id) == (
        ChargeState.SUCCEEDED,
        request.payment_id,
        request.workflow_id,
    )
    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.STRIPE, gateway_reference=outcome.gateway_reference)
    )
    assert found.state is ChargeState.SUCCEEDED


async def test_refund_refusal_is_an_outcome(stack: Stack) -> None:
    """Refunding more than was paid is a FAILED refund outcome with Stripe's code."""
    request = charge(tokens.VISA)
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    refund = RefundRequest(
        gateway=GatewayName.STRIPE,
        payment_id=request.payment_id,
        gateway_reference=outcome.gateway_reference,
        idempotency_key=f"{request.workflow_id}/refund/1",
        amount_minor=5000,
        currency="EUR",
        reason="customer changed their mind",
    )
    refused = await stack.gateway.refund(refund)
    assert refused.state is RefundState.FAILED
    assert refused.failure is not None and refused.failure.code == "amount_too_large"


async def test_refund_reason_outside_stripes_enum_goes_to_metadata(stack: Stack) -> None:
    """Stripe accepts three refund reasons; any other is kept in metadata instead."""
    request = charge(tokens.VISA)
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    result = await stack.gateway.refund(
        RefundRequest(
            gateway=GatewayName.STRIPE,
            payment_id=request.payment_id,
            gateway_reference=outcome.gateway_reference,
            idempotency_key=f"{request.workflow_id}/refund/1",
            amount_minor=4200,
            currency="EUR",
            reason="goods_not_received",
        )
    )
    assert result.state is RefundState.SUCCEEDED
    assert result.refund_reference is not None
    refund = stack.server.refunds[result.refund_reference]
    assert refund["reason"] is None
    assert refund["metadata"]["reason"] == "goods_not_received"
    assert refund["metadata"]["payment_id"] == request.payment_id


async def test_refund_is_announced_and_can_be_looked_up(stack: Stack) -> None:
    """A refund is announced by a signed refund.updated carrying our refund id, and
    retrieve_refund reads its state; an unknown refund reads as still pending."""
    request = charge(tokens.VISA)
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    result = await stack.gateway.refund(
        RefundRequest(
            gateway=GatewayName.STRIPE,
            payment_id=request.payment_id,
            gateway_reference=outcome.gateway_reference,
            idempotency_key=f"{request.workflow_id}/refund",
            amount_minor=1000,
            currency="EUR",
            refund_id="ref_stripe_1",
        )
    )
    assert result.refund_reference is not None
    [announced] = [
        e
        for e in stack.server.events
        if e["type"] == "refund.updated" and e["data"]["object"]["id"] == result.refund_reference
    ]
    body = json.dumps(announced).encode()
    [event] = stack.verifier.verify(
        {"Stripe-Signature": sign(WEBHOOK_SECRET, body, int(time.time()))}, body
    )
    assert event.refund is not None
    assert (event.refund.refund_id, event.refund.state) == ("ref_stripe_1", RefundState.SUCCEEDED)
    assert event.gateway_reference == outcome.gateway_reference
    found = await stack.gateway.retrieve_refund(
        RefundLookup(gateway=GatewayName.STRIPE, refund_reference=result.refund_reference)
    )
    assert found.state is RefundState.SUCCEEDED
    missing = await stack.gateway.retrieve_refund(
        RefundLookup(gateway=GatewayName.STRIPE, refund_reference="re_missing")
    )
    assert missing.state is RefundState.PENDING


async def test_connection_refused_is_unavailable() -> None:
    """Nothing listening on the port: GatewayUnavailable, retryable."""
    sock = bound_socket()  # bound, never listening: connections are refused
    try:
        async with StripeGateway(API_KEY, url_of(sock)) as gateway:
            with pytest.raises(GatewayUnavailable) as caught:
                await gateway.charge(charge(tokens.VISA))
    finally:
        sock.close()
    assert caught.value.retryable


async def test_timeout_is_unavailable() -> None:
    """A Stripe that does not answer in time is GatewayUnavailable (retry with the same key)."""

    async def hang(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response("{}", media_type="application/json")

    app = Starlette(routes=[Route("/v1/payment_intents", hang, methods=["POST"])])
    async with serve(app) as url, StripeGateway(API_KEY, url, timeout_seconds=0.2) as gateway:
        with pytest.raises(GatewayUnavailable, match="APIConnectionError"):
            await gateway.charge(charge(tokens.VISA))


def test_api_base_must_be_a_url() -> None:
    """A misconfigured base URL fails when the gateway is built, not on the first payment."""
    with pytest.raises(ValueError, match="PAYTIDE_STRIPE_API_BASE"):
        StripeGateway(API_KEY, "api.stripe.com")
