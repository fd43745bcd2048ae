"""`AdyenGateway` details beyond the contract suite, against the Adyen-shaped server over real
HTTP, with the official SDK doing the sending."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateways.adyen import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    RETURN_URL,
    AdyenGateway,
    AdyenWebhookVerifier,
    adyen_idempotency_key,
    checkout_base_url,
)
from gateways.base import (
    GatewayRateLimited,
    GatewayRefused,
    GatewayRequestError,
    GatewayUnavailable,
    WebhookRejected,
)
from tests.support.adyen_server import AdyenServer, Token
from tests.support.serve import bound_socket, serve, url_of
from workflows.contract import (
    CancelRequest,
    CaptureMethod,
    CaptureRequest,
    ChargeLookup,
    ChargeRequest,
    ChargeState,
    GatewayEvent,
    GatewayName,
    RefundRequest,
    RefundState,
)

pytestmark = pytest.mark.integration

API_KEY = "adyen_integration_api_key"
MERCHANT_ACCOUNT = "PaytideIntegrationECOM"
HMAC_KEY = secrets.token_hex(32).upper()
USERNAME = "adyen-integration"
PASSWORD = "adyen-integration-password"
SLOW_SECONDS = 1.0
WAIT_SECONDS = 5.0


@dataclass
class WebhookReceiver:
    """Stands in for paytide's webhook endpoint: verifies, records, answers ``[accepted]``."""

    verifier: AdyenWebhookVerifier
    events: list[GatewayEvent] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def receive(self, request: Request) -> Response:
        try:
            events = self.verifier.verify(request.headers, await request.body())
        except WebhookRejected as rejected:
            self.rejections.append(rejected.reason)
            return PlainTextResponse(rejected.reason, status_code=401)
        async with self.arrived:
            self.events.extend(events)
            self.arrived.notify_all()
        return PlainTextResponse("[accepted]")

    async def wait_for(self, reference: str, state: ChargeState) -> GatewayEvent:
        def match() -> GatewayEvent | None:
            return next(
                (e for e in self.events if e.gateway_reference == reference and e.state is state),
                None,
            )

        async with asyncio.timeout(WAIT_SECONDS), self.arrived:
            await self.arrived.wait_for(lambda: match() is not None)
        found = match()
        assert found is not None
        return found


@dataclass
class Stack:
    url: str
    server: AdyenServer
    gateway: AdyenGateway
    receiver: WebhookReceiver


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    receiver = WebhookReceiver(AdyenWebhookVerifier([HMAC_KEY], USERNAME, PASSWORD))
    receiver_app = Starlette(routes=[Route("/webhooks/adyen", receiver.receive, methods=["POST"])])
    async with serve(receiver_app) as receiver_url:
        server = AdyenServer(
            api_key=API_KEY,
            merchant_account=MERCHANT_ACCOUNT,
            hmac_key=HMAC_KEY,
            webhook_username=USERNAME,
            webhook_password=PASSWORD,
            webhook_url=f"{receiver_url}/webhooks/adyen",
            settle_after=0.02,
            slow_seconds=SLOW_SECONDS,
        )
        async with serve(server.app) as url:
            gateway = AdyenGateway(API_KEY, MERCHANT_ACCOUNT, checkout_url=url, timeout_seconds=5)
            yield Stack(url=url, server=server, gateway=gateway, receiver=receiver)


def charge_request(token: Token, **overrides: Any) -> ChargeRequest:
    workflow_id = f"payment:adyen:{uuid.uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "payment_id": f"pay_{uuid.uuid4().hex[:20]}",
        "workflow_id": workflow_id,
        "merchant_id": "integration",
        "gateway": GatewayName.ADYEN,
        "idempotency_key": f"{workflow_id}/charge/1",
        "amount_minor": 2599,
        "currency": "EUR",
        "payment_method": token.value,
        "customer_id": "cus_adyen",
        "metadata": {"order_id": "ord_1"},
        **overrides,
    }
    return ChargeRequest(**values)


async def test_the_wire_request_is_what_checkout_expects(stack: Stack) -> None:
    """/payments carries the stored card, our ids, returnUrl, immediate capture and our key."""
    request = charge_request(Token.OK)
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.SUCCEEDED
    assert (outcome.amount_minor, outcome.currency) == (2599, "EUR")
    sent = stack.server.payment_requests[-1]
    assert sent["paymentMethod"] == {"type": "scheme", "storedPaymentMethodId": "adyen_ok"}
    assert sent["reference"] == request.payment_id
    assert sent["merchantAccount"] == MERCHANT_ACCOUNT
    assert sent["amount"] == {"value": 2599, "currency": "EUR"}
    assert sent["shopperReference"] == "cus_adyen"
    assert sent["returnUrl"] == RETURN_URL
    assert sent["captureDelayHours"] == 0
    assert "additionalData" not in sent
    assert sent["metadata"] == {
        "payment_id": request.payment_id,
        "workflow_id": request.workflow_id,
        "merchant_id": "integration",
        "order_id": "ord_1",
    }
    assert stack.server.idempotency_keys[-1] == request.idempotency_key


async def test_refused_is_a_declined_outcome_with_the_refusal_code(stack: Stack) -> None:
    """Refused maps to DECLINED carrying refusalReasonCode and refusalReason, not retryable."""
    outcome = await stack.gateway.charge(charge_request(Token.REFUSED))
    assert outcome.state is ChargeState.DECLINED
    assert outcome.gateway_reference
    assert outcome.failure is not None
    assert outcome.failure.code == "refused_2"
    assert "Refused" in outcome.failure.message
    assert outcome.failure.retryable is False


async def test_result_code_error_is_a_retryable_failure(stack: Stack) -> None:
    """resultCode Error is RETRYABLE_FAILURE: a new attempt may work."""
    outcome = await stack.gateway.charge(charge_request(Token.ERROR))
    assert outcome.state is ChargeState.RETRYABLE_FAILURE
    assert outcome.failure is not None and outcome.failure.retryable is True
    assert outcome.failure.message == "Acquirer Error"


async def test_redirect_shopper_carries_the_redirect(stack: Stack) -> None:
    """RedirectShopper is REQUIRES_ACTION with the action's type and URL."""
    outcome = await stack.gateway.charge(charge_request(Token.THREE_DS))
    assert outcome.state is ChargeState.REQUIRES_ACTION
    assert outcome.next_action is not None
    assert outcome.next_action.type == "redirect"
    assert outcome.next_action.redirect_url is not None
    assert outcome.next_action.redirect_url.startswith(stack.url)


async def test_bad_api_key_is_a_request_error(stack: Stack) -> None:
    """401 (wrong API key) is GatewayRequestError: retrying cannot help."""
    gateway = AdyenGateway("wrong-key", MERCHANT_ACCOUNT, checkout_url=stack.url)
    with pytest.raises(GatewayRequestError, match="401"):
        await gateway.charge(charge_request(Token.OK))


async def test_wrong_merchant_account_is_a_request_error(stack: Stack) -> None:
    """403 (merchant account the key may not use) is GatewayRequestError."""
    gateway = AdyenGateway(API_KEY, "SomeoneElseECOM", checkout_url=stack.url)
    with pytest.raises(GatewayRequestError, match="403 errorCode 901"):
        await gateway.charge(charge_request(Token.OK))


async def test_rate_limit_is_retryable_with_retry_after(stack: Stack) -> None:
    """429 is GatewayRateLimited carrying Adyen's Retry-After."""
    with pytest.raises(GatewayRateLimited) as error:
        await stack.gateway.charge(charge_request(Token.RATE_LIMITED))
    assert error.value.retryable is True
    assert error.value.retry_after == 2.0


async def test_transient_idempotency_error_is_retryable(stack: Stack) -> None:
    """422 errorCode 704 with Transient-Error (same key still in progress) is retryable."""
    with pytest.raises(GatewayUnavailable) as error:
        await stack.gateway.charge(charge_request(Token.IN_PROGRESS))
    assert not isinstance(error.value, GatewayRateLimited)
    assert "704" in str(error.value)


async def test_connection_refused_is_unavailable() -> None:
    """Nothing listening: GatewayRefused (retryable, and provably not processed)."""
    sock = bound_socket()  # bound, never listening: connections are refused
    try:
        gateway = AdyenGateway(API_KEY, MERCHANT_ACCOUNT, checkout_url=url_of(sock))
        with pytest.raises(GatewayRefused, match="refused the connection"):
            await gateway.charge(charge_request(Token.OK))
    finally:
        sock.close()


async def test_slow_answer_times_out_as_unavailable(stack: Stack) -> None:
    """An answer slower than the adapter's timeout is GatewayUnavailable (retry, same key)."""
    gateway = AdyenGateway(API_KEY, MERCHANT_ACCOUNT, checkout_url=stack.url, timeout_seconds=0.2)
    with pytest.raises(GatewayUnavailable):
        await gateway.charge(charge_request(Token.SLOW))


async def test_long_idempotency_keys_are_hashed_stably(stack: Stack) -> None:
    """A key over Adyen's 64 characters goes out as its stable hash; retries still charge once."""
    long_key = "payment:" + "m" * 40 + ":" + "k" * 40 + "/charge/1"
    request = charge_request(Token.OK, idempotency_key=long_key)
    first = await stack.gateway.charge(request)
    again = await stack.gateway.charge(request)
    sent = stack.server.idempotency_keys[-1]
    assert len(sent) == MAX_IDEMPOTENCY_KEY_LENGTH
    assert sent == adyen_idempotency_key(long_key) == stack.server.idempotency_keys[-2]
    assert first.gateway_reference == again.gateway_reference
    assert stack.server.payments_created[sent] == 1


async def test_manual_capture_authorizes_then_capture_is_received(stack: Stack) -> None:
    """Manual capture: Authorised is AUTHORIZED; capture is received (PENDING) under our key."""
    request = charge_request(Token.OK, capture=CaptureMethod.MANUAL)
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.AUTHORIZED
    sent = stack.server.payment_requests[-1]
    assert sent["additionalData"] == {"manualCapture": "true"}
    assert "captureDelayHours" not in sent
    assert outcome.gateway_reference is not None

    capture_key = f"{request.workflow_id}/capture"
    captured = await stack.gateway.capture(
        CaptureRequest(
            gateway=GatewayName.ADYEN,
            gateway_reference=outcome.gateway_reference,
            idempotency_key=capture_key,
            amount_minor=2599,
            currency="EUR",
        )
    )
    assert captured.state is ChargeState.PENDING
    assert captured.gateway_reference == outcome.gateway_reference
    assert (captured.amount_minor, captured.currency) == (2599, "EUR")
    assert stack.server.idempotency_keys[-1] == capture_key
    assert stack.server.modifications_created[capture_key] == 1


async def test_cancel_is_received_then_confirmed_by_webhook(stack: Stack) -> None:
    """Cancel answers PENDING; the signed CANCELLATION webhook then says CANCELED."""
    request = charge_request(Token.OK, capture=CaptureMethod.MANUAL)
    outcome = await stack.gateway.charge(request)
    assert outcome.gateway_reference is not None
    cancel_key = f"{request.workflow_id}/charge/1/cancel"
    canceled = await stack.gateway.cancel(
        CancelRequest(
            gateway=GatewayName.ADYEN,
            gateway_reference=outcome.gateway_reference,
            idempotency_key=cancel_key,
        )
    )
    assert canceled.state is ChargeState.PENDING
    assert canceled.gateway_reference == outcome.gateway_reference
    assert stack.server.idempotency_keys[-1] == cancel_key
    event = await stack.receiver.wait_for(outcome.gateway_reference, ChargeState.CANCELED)
    assert event.payment_id == request.payment_id


async def test_async_payment_settles_by_a_delivered_webhook(stack: Stack) -> None:
    """Received is PENDING; Adyen's AUTHORISATION webhook arrives signed and says AUTHORIZED."""
    request = charge_request(Token.ASYNC)
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.PENDING
    assert outcome.gateway_reference is not None
    event = await stack.receiver.wait_for(outcome.gateway_reference, ChargeState.AUTHORIZED)
    assert event.payment_id == request.payment_id
    assert (event.amount_minor, event.currency) == (2599, "EUR")
    assert stack.receiver.rejections == []


async def test_refund_is_received_with_its_own_reference(stack: Stack) -> None:
    """A refund answers PENDING with the refund's pspReference and Adyen's refund reason."""
    outcome = await stack.gateway.charge(charge_request(Token.OK))
    assert outcome.gateway_reference is not None
    refund = await stack.gateway.refund(
        RefundRequest(
            gateway=GatewayName.ADYEN,
            payment_id="pay_refund",
            gateway_reference=outcome.gateway_reference,
            idempotency_key=f"refund-{uuid.uuid4().hex}",
            amount_minor=500,
            currency="EUR",
            reason="requested_by_customer",
        )
    )
    assert refund.state is RefundState.PENDING
    assert refund.refund_reference not in (None, outcome.gateway_reference)


async def test_modification_of_an_unknown_payment_is_a_request_error(stack: Stack) -> None:
    """A capture for a pspReference Adyen does not know is a 422 request error."""
    with pytest.raises(GatewayRequestError, match="422"):
        await stack.gateway.capture(
            CaptureRequest(
                gateway=GatewayName.ADYEN,
                gateway_reference="0000000000000000",
                idempotency_key=f"capture-{uuid.uuid4().hex}",
                amount_minor=100,
                currency="EUR",
            )
        )


async def test_retrieve_without_memory_is_pending_never_not_found(stack: Stack) -> None:
    """Checkout cannot look payments up: a fresh adapter says PENDING, never NOT_FOUND."""
    outcome = await stack.gateway.charge(charge_request(Token.OK))
    fresh = AdyenGateway(API_KEY, MERCHANT_ACCOUNT, checkout_url=stack.url)
    by_reference = await fresh.retrieve(
        ChargeLookup(gateway=GatewayName.ADYEN, gateway_reference=outcome.gateway_reference)
    )
    by_key = await fresh.retrieve(
        ChargeLookup(gateway=GatewayName.ADYEN, idempotency_key="payment:demo:unknown/charge/1")
    )
    assert by_reference.state is ChargeState.PENDING
    assert by_reference.gateway_reference == outcome.gateway_reference
    assert by_key.state is ChargeState.PENDING
    with pytest.raises(GatewayRequestError):
        await fresh.retrieve(ChargeLookup(gateway=GatewayName.ADYEN))


async def test_stats_endpoint_reports_what_the_server_did(stack: Stack) -> None:
    """GET /_test/stats counts payments per idempotency key, for end-to-end tests to read."""
    request = charge_request(Token.OK)
    await stack.gateway.charge(request)
    await stack.gateway.charge(request)
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{stack.url}/_test/stats")).json()
    assert stats["payments_created"][request.idempotency_key] == 1
    assert stats["replays"] >= 1
    assert stats["requests"]["payments"] >= 2


def test_base_urls_follow_adyen_environments() -> None:
    """Test, live (company prefix) and override base URLs, each with the pinned API version."""
    assert checkout_base_url("test") == "https://checkout-test.adyen.com/v71"
    assert (
        checkout_base_url("live", "1797a841fbb37ca7-AdyenDemo")
        == "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71"
    )
    assert checkout_base_url("test", checkout_url="http://127.0.0.1:9/") == "http://127.0.0.1:9/v71"
    assert checkout_base_url("test", checkout_url="http://proxy/v70") == "http://proxy/v70"
    with pytest.raises(ValueError, match="live URL prefix"):
        AdyenGateway(API_KEY, MERCHANT_ACCOUNT, environment="live")
