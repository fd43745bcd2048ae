"""`SandboxGateway` and `SandboxWebhookVerifier` against the sandbox served over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateways.base import (
    GatewayRateLimited,
    GatewayRefused,
    GatewayRequestError,
    GatewayUnavailable,
    WebhookRejected,
)
from gateways.sandbox import SandboxGateway, SandboxWebhookVerifier
from gateways.sandbox_server import SandboxConfig, create_sandbox_app
from gateways.signing import sign, verify
from tests.support.serve import serve
from tests.support.webhook_recorder import WebhookRecorder
from workflows.contract import (
    CancelRequest,
    CaptureMethod,
    CaptureRequest,
    ChargeLookup,
    ChargeRequest,
    ChargeState,
    Failure,
    GatewayEvent,
    GatewayName,
    RefundLookup,
    RefundRequest,
    RefundState,
)

pytestmark = pytest.mark.integration

API_KEY = "sk_sandbox_integration"
WEBHOOK_SECRET = "whsec_sandbox_integration"
SLOW_DELAY = 0.5


@dataclass
class Stack:
    sandbox_url: str
    client: httpx.AsyncClient
    gateway: SandboxGateway
    verifier: SandboxWebhookVerifier
    recorder: WebhookRecorder

    async def stats(self) -> dict[str, dict[str, int]]:
        response = await self.client.get(
            f"{self.sandbox_url}/v1/stats", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        stats: dict[str, dict[str, int]] = response.json()
        return stats


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    recorder = WebhookRecorder()
    async with serve(recorder.app) as receiver_url:
        config = SandboxConfig(
            api_key=API_KEY,
            webhook_url=f"{receiver_url}/webhooks",
            webhook_secret=WEBHOOK_SECRET,
            webhook_delay=0.02,
            slow_delay=SLOW_DELAY,
            flaky_failures=2,
        )
        async with (
            serve(create_sandbox_app(config)) as sandbox_url,
            httpx.AsyncClient(timeout=5) as client,
        ):
            yield Stack(
                sandbox_url=sandbox_url,
                client=client,
                gateway=SandboxGateway(client, sandbox_url, API_KEY),
                verifier=SandboxWebhookVerifier([WEBHOOK_SECRET], tolerance_seconds=300),
                recorder=recorder,
            )


def charge_request(payment_method: str = "pm_sandbox_ok", **fields: Any) -> ChargeRequest:
    payment_id = f"pay_{uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "workflow_id": f"payment:demo:{payment_id}",
        "merchant_id": "demo",
        "gateway": GatewayName.SANDBOX,
        "idempotency_key": f"payment:demo:{payment_id}/charge-1",
        "amount_minor": 4200,
        "currency": "EUR",
        "payment_method": payment_method,
        "customer_id": "cus_1",
        "metadata": {"order_id": "order-7"},
    }
    values.update(fields)
    return ChargeRequest(**values)


def capture_request(gateway_reference: str, **fields: Any) -> CaptureRequest:
    values: dict[str, Any] = {
        "gateway": GatewayName.SANDBOX,
        "gateway_reference": gateway_reference,
        "idempotency_key": f"capture-{gateway_reference}",
        "amount_minor": 4200,
        "currency": "EUR",
    }
    values.update(fields)
    return CaptureRequest(**values)


def refund_request(gateway_reference: str, **fields: Any) -> RefundRequest:
    values: dict[str, Any] = {
        "gateway": GatewayName.SANDBOX,
        "payment_id": f"pay_{uuid4().hex[:12]}",
        "gateway_reference": gateway_reference,
        "idempotency_key": f"refund-{uuid4().hex}",
        "amount_minor": 1000,
        "currency": "EUR",
        "reason": "requested_by_customer",
        "refund_id": "ref_test",
    }
    values.update(fields)
    return RefundRequest(**values)


async def succeeded_charge(stack: Stack, payment_method: str = "pm_sandbox_instant") -> str:
    """The gateway reference of a charge that succeeded in its answer."""
    outcome = await stack.gateway.charge(charge_request(payment_method))
    assert outcome.state is ChargeState.SUCCEEDED
    assert outcome.gateway_reference is not None
    return outcome.gateway_reference


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_ok_charge_is_pending_then_a_signed_webhook_succeeds(stack: Stack) -> None:
    """An approved charge answers pending; its charge.succeeded webhook verifies and maps, with
    the whole amount captured."""
    request = charge_request("pm_sandbox_ok")
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.PENDING
    assert outcome.gateway_reference is not None
    assert (outcome.amount_minor, outcome.currency) == (4200, "EUR")

    webhook = await stack.recorder.wait_for_event(outcome.gateway_reference, "charge.succeeded")
    events = stack.verifier.verify(webhook.headers, webhook.body)
    assert events == [
        GatewayEvent(
            provider=GatewayName.SANDBOX,
            event_id=webhook.json()["id"],
            event_type="charge.succeeded",
            state=ChargeState.SUCCEEDED,
            gateway_reference=outcome.gateway_reference,
            amount_minor=4200,
            currency="EUR",
            payment_id=request.payment_id,
            workflow_id=request.workflow_id,
            amount_captured=4200,
        )
    ]
    settled = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.SANDBOX, gateway_reference=outcome.gateway_reference)
    )
    assert settled.state is ChargeState.SUCCEEDED


async def test_manual_capture_is_authorized(stack: Stack) -> None:
    """capture=manual settles as AUTHORIZED, by webhook and on retrieve."""
    outcome = await stack.gateway.charge(charge_request(capture=CaptureMethod.MANUAL))
    assert outcome.gateway_reference is not None
    webhook = await stack.recorder.wait_for_event(outcome.gateway_reference, "charge.authorized")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.state is ChargeState.AUTHORIZED


async def test_decline_is_an_outcome(stack: Stack) -> None:
    """A declined card comes back as a DECLINED outcome with the gateway's reason, not an error."""
    outcome = await stack.gateway.charge(charge_request("pm_sandbox_decline"))
    assert outcome.state is ChargeState.DECLINED
    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.retryable) == ("card_declined", False)


async def test_3ds_challenge_completes_and_succeeds(stack: Stack) -> None:
    """A 3-D Secure charge needs action; completing the challenge yields a verified success."""
    outcome = await stack.gateway.charge(charge_request("pm_sandbox_3ds"))
    assert outcome.state is ChargeState.REQUIRES_ACTION
    assert outcome.client_secret is not None
    assert outcome.next_action is not None
    assert outcome.next_action.type == "redirect_to_url"
    redirect = outcome.next_action.redirect_url
    assert redirect == f"{stack.sandbox_url}/v1/charges/{outcome.gateway_reference}/3ds"

    # The customer's browser holds only the client secret, not our API key.
    completed = await stack.client.post(
        redirect, json={"client_secret": outcome.client_secret, "result": "success"}
    )
    assert completed.status_code == 200
    assert outcome.gateway_reference is not None
    webhook = await stack.recorder.wait_for_event(outcome.gateway_reference, "charge.succeeded")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.state is ChargeState.SUCCEEDED


async def test_flaky_gateway_raises_unavailable_then_charges_once(stack: Stack) -> None:
    """503s become retryable GatewayUnavailable; retrying the same key charges exactly once."""
    request = charge_request("pm_sandbox_flaky")
    for _ in range(2):
        with pytest.raises(GatewayUnavailable) as caught:
            await stack.gateway.charge(request)
        assert caught.value.retryable
    outcome = await stack.gateway.charge(request)
    assert outcome.state is ChargeState.PENDING
    stats = await stack.stats()
    assert stats["charges_by_reference"][request.payment_id] == 1
    assert stats["requests_by_key"][request.idempotency_key] == 3


async def test_timed_out_charge_retried_with_its_key_charges_once(stack: Stack) -> None:
    """A client timeout is GatewayUnavailable; the retry with the same key gets the same charge."""
    request = charge_request("pm_sandbox_slow")
    async with httpx.AsyncClient(timeout=SLOW_DELAY / 5) as impatient:
        with pytest.raises(GatewayUnavailable, match="ReadTimeout"):
            await SandboxGateway(impatient, stack.sandbox_url, API_KEY).charge(request)
    retried = await stack.gateway.charge(request)
    assert retried.state is ChargeState.PENDING
    assert (await stack.stats())["charges_by_reference"][request.payment_id] == 1


async def test_gateway_reported_retryable_failure(stack: Stack) -> None:
    """A retryable processor failure is RETRYABLE_FAILURE; a new attempt (new key) goes through."""
    first = charge_request("pm_sandbox_retryable")
    outcome = await stack.gateway.charge(first)
    assert outcome.state is ChargeState.RETRYABLE_FAILURE
    assert outcome.failure is not None
    assert outcome.failure.code == "processor_unavailable"
    second = charge_request(
        "pm_sandbox_retryable",
        payment_id=first.payment_id,
        workflow_id=first.workflow_id,
        idempotency_key=f"{first.workflow_id}/charge-2",
    )
    assert (await stack.gateway.charge(second)).state is ChargeState.PENDING


async def test_retrieve_by_idempotency_key(stack: Stack) -> None:
    """Reconciliation finds a charge by our idempotency key; an unknown key is NOT_FOUND."""
    request = charge_request("pm_sandbox_silent")
    created = await stack.gateway.charge(request)
    found = await stack.gateway.retrieve(
        ChargeLookup(gateway=GatewayName.SANDBOX, idempotency_key=request.idempotency_key)
    )
    assert found == created
    assert found.state is ChargeState.PENDING
    missing_key = ChargeLookup(gateway=GatewayName.SANDBOX, idempotency_key="never-used")
    missing_ref = ChargeLookup(gateway=GatewayName.SANDBOX, gateway_reference="ch_missing")
    assert (await stack.gateway.retrieve(missing_key)).state is ChargeState.NOT_FOUND
    assert (await stack.gateway.retrieve(missing_ref)).state is ChargeState.NOT_FOUND
    with pytest.raises(GatewayRequestError):
        await stack.gateway.retrieve(ChargeLookup(gateway=GatewayName.SANDBOX))


async def test_cancel_pending_charge(stack: Stack) -> None:
    """A pending charge cancels; the charge.canceled webhook maps to CANCELED."""
    created = await stack.gateway.charge(charge_request("pm_sandbox_silent"))
    assert created.gateway_reference is not None
    cancel = CancelRequest(
        gateway=GatewayName.SANDBOX,
        gateway_reference=created.gateway_reference,
        idempotency_key=f"cancel-{created.gateway_reference}",
    )
    assert (await stack.gateway.cancel(cancel)).state is ChargeState.CANCELED
    webhook = await stack.recorder.wait_for_event(created.gateway_reference, "charge.canceled")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.state is ChargeState.CANCELED


async def test_cancel_too_late_returns_the_current_state(stack: Stack) -> None:
    """Canceling a final charge is not an error: the outcome is its current state."""
    declined = await stack.gateway.charge(charge_request("pm_sandbox_decline"))
    assert declined.gateway_reference is not None
    outcome = await stack.gateway.cancel(
        CancelRequest(
            gateway=GatewayName.SANDBOX,
            gateway_reference=declined.gateway_reference,
            idempotency_key=f"cancel-{declined.gateway_reference}",
        )
    )
    assert outcome.state is ChargeState.DECLINED


async def test_tampered_or_unsigned_webhooks_are_rejected(stack: Stack) -> None:
    """A delivered webhook verifies only byte for byte, with its header, while fresh."""
    outcome = await stack.gateway.charge(charge_request("pm_sandbox_ok"))
    assert outcome.gateway_reference is not None
    webhook = await stack.recorder.wait_for_event(outcome.gateway_reference, "charge.succeeded")
    tampered = webhook.body.replace(b'"amount":4200', b'"amount":1')
    assert tampered != webhook.body

    def reason(headers: dict[str, str], body: bytes, verifier: SandboxWebhookVerifier) -> str:
        with pytest.raises(WebhookRejected) as caught:
            verifier.verify(headers, body)
        return caught.value.reason

    assert reason(webhook.headers, tampered, stack.verifier) == "bad_signature"
    assert reason({}, webhook.body, stack.verifier) == "missing_signature"
    rotated = SandboxWebhookVerifier(["whsec_other"], tolerance_seconds=300)
    assert reason(webhook.headers, webhook.body, rotated) == "bad_signature"
    later = SandboxWebhookVerifier(
        [WEBHOOK_SECRET], tolerance_seconds=300, clock=lambda: time.time() + 3600
    )
    assert reason(webhook.headers, webhook.body, later) == "stale_timestamp"
    # Upper-case header names (a plain dict from elsewhere) are found too.
    upper = {"Sandbox-Signature": webhook.headers["sandbox-signature"]}
    assert stack.verifier.verify(upper, webhook.body)[0].state is ChargeState.SUCCEEDED


async def test_signed_garbage_is_malformed_payload(stack: Stack) -> None:
    """A correctly signed body that is not a sandbox event is `malformed_payload`."""
    for body in (b"not json", b"[]", b'{"id": "evt_1"}'):
        headers = {"sandbox-signature": sign(WEBHOOK_SECRET, body, int(time.time()))}
        with pytest.raises(WebhookRejected) as caught:
            stack.verifier.verify(headers, body)
        assert caught.value.reason == "malformed_payload"


async def test_unknown_event_types_are_ignored(stack: Stack) -> None:
    """A signed event of a type we do not know yields no events instead of failing delivery."""
    body = b'{"id":"evt_x","type":"charge.refunded","created":1,"data":{"id":"ch_1"}}'
    headers = {"sandbox-signature": sign(WEBHOOK_SECRET, body, int(time.time()))}
    assert stack.verifier.verify(headers, body) == []


async def test_failed_webhook_carries_the_failure(stack: Stack) -> None:
    """A charge.failed webhook maps to DECLINED with the gateway's failure."""
    outcome = await stack.gateway.charge(charge_request("pm_sandbox_decline"))
    assert outcome.gateway_reference is not None
    webhook = await stack.recorder.wait_for_event(outcome.gateway_reference, "charge.failed")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.state is ChargeState.DECLINED
    assert event.failure == Failure(
        code="card_declined", message="The card was declined.", retryable=False
    )


async def test_bad_credentials_and_key_reuse_are_request_errors(stack: Stack) -> None:
    """401 and an idempotency conflict are non-retryable GatewayRequestError."""
    wrong_key = SandboxGateway(stack.client, stack.sandbox_url, "sk_wrong")
    with pytest.raises(GatewayRequestError, match="401 unauthorized") as caught:
        await wrong_key.charge(charge_request())
    assert not caught.value.retryable

    request = charge_request("pm_sandbox_silent")
    await stack.gateway.charge(request)
    reused = charge_request("pm_sandbox_silent", idempotency_key=request.idempotency_key)
    with pytest.raises(GatewayRequestError, match="idempotency_conflict"):
        await stack.gateway.charge(reused)


async def test_unreachable_sandbox_is_unavailable(stack: Stack) -> None:
    """A refused connection is GatewayRefused: retryable, and provably not processed."""
    nowhere = SandboxGateway(stack.client, f"http://127.0.0.1:{free_port()}", API_KEY)
    with pytest.raises(GatewayRefused, match="refused the connection"):
        await nowhere.charge(charge_request())


async def scripted(request: Request) -> JSONResponse:
    status = int(request.path_params["status"])
    headers = {"Retry-After": "7"} if status == 429 else None
    error = {"error": {"code": f"scripted_{status}", "message": "scripted answer"}}
    return JSONResponse(error, status, headers=headers)


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [
        (429, GatewayRateLimited, 7.0),
        (500, GatewayUnavailable, None),
        (502, GatewayUnavailable, None),
        (400, GatewayRequestError, None),
        (403, GatewayRequestError, None),
    ],
)
async def test_http_errors_translate_where_born(
    stack: Stack, status: int, error: type[Exception], retry_after: float | None
) -> None:
    """Each HTTP error status maps to the exception class that says whether to retry."""
    answers = Starlette(routes=[Route("/{status:int}/v1/charges", scripted, methods=["POST"])])
    async with serve(answers, lifespan="off") as url:
        gateway = SandboxGateway(stack.client, f"{url}/{status}", API_KEY)
        with pytest.raises(error) as caught:
            await gateway.charge(charge_request())
    assert type(caught.value) is error
    assert getattr(caught.value, "retry_after", None) == retry_after


async def test_instant_charge_succeeds_in_the_answer(stack: Stack) -> None:
    """pm_sandbox_instant comes back SUCCEEDED from charge() itself."""
    outcome = await stack.gateway.charge(charge_request("pm_sandbox_instant"))
    assert outcome.state is ChargeState.SUCCEEDED
    assert (outcome.amount_minor, outcome.currency) == (4200, "EUR")


async def test_unavailable_sandbox_creates_nothing(stack: Stack) -> None:
    """pm_sandbox_unavailable is a retryable GatewayUnavailable and leaves no charge behind."""
    request = charge_request("pm_sandbox_unavailable")
    for _ in range(2):
        with pytest.raises(GatewayUnavailable, match="503 service_unavailable"):
            await stack.gateway.charge(request)
    assert request.idempotency_key not in (await stack.stats())["charges_by_key"]


async def test_capture_an_authorized_charge(stack: Stack) -> None:
    """capture() takes an authorized charge to SUCCEEDED, idempotently, and its webhook maps;
    both say what was captured, the authorization nothing."""
    authorized = await stack.gateway.charge(
        charge_request("pm_sandbox_instant", capture=CaptureMethod.MANUAL)
    )
    assert authorized.state is ChargeState.AUTHORIZED
    assert authorized.gateway_reference is not None
    request = capture_request(authorized.gateway_reference)
    captured = await stack.gateway.capture(request)
    assert captured.state is ChargeState.SUCCEEDED
    assert captured.gateway_reference == authorized.gateway_reference
    assert authorized.amount_captured is None
    assert captured.amount_captured == request.amount_minor
    assert await stack.gateway.capture(request) == captured  # A retried activity, same key.
    webhook = await stack.recorder.wait_for_event(authorized.gateway_reference, "charge.succeeded")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.state is ChargeState.SUCCEEDED
    assert event.amount_captured == request.amount_minor


async def test_capture_too_late_returns_the_current_state(stack: Stack) -> None:
    """Capturing a charge that is not authorized is an outcome: its state, or NOT_FOUND."""
    declined = await stack.gateway.charge(
        charge_request("pm_sandbox_decline", capture=CaptureMethod.MANUAL)
    )
    assert declined.gateway_reference is not None
    outcome = await stack.gateway.capture(capture_request(declined.gateway_reference))
    assert outcome.state is ChargeState.DECLINED
    missing = await stack.gateway.capture(capture_request("ch_missing"))
    assert missing.state is ChargeState.NOT_FOUND


async def test_capture_beyond_the_authorization_is_a_request_error(stack: Stack) -> None:
    """Capturing more than authorized, or reusing a capture key, is a GatewayRequestError; a
    partial capture says what it captured."""
    authorized = await stack.gateway.charge(
        charge_request("pm_sandbox_instant", capture=CaptureMethod.MANUAL)
    )
    assert authorized.gateway_reference is not None
    reference = authorized.gateway_reference
    with pytest.raises(GatewayRequestError, match="amount_exceeds_authorized") as caught:
        await stack.gateway.capture(capture_request(reference, amount_minor=4201))
    assert not caught.value.retryable
    partial = await stack.gateway.capture(capture_request(reference, amount_minor=1000))
    assert partial.state is ChargeState.SUCCEEDED
    assert (partial.amount_minor, partial.amount_captured) == (4200, 1000)
    # Same (default) key, another amount: our bug, never a second capture.
    with pytest.raises(GatewayRequestError, match="idempotency_conflict"):
        await stack.gateway.capture(capture_request(reference, amount_minor=2000))


async def test_refund_is_pending_then_signed_and_idempotent(stack: Stack) -> None:
    """refund() answers PENDING with a reference, replays by key; its signed webhook parses to a
    refund event for our refund id; retrieve_refund reports it settled."""
    reference = await succeeded_charge(stack)
    request = refund_request(reference)
    first = await stack.gateway.refund(request)
    assert first.state is RefundState.PENDING
    assert first.refund_reference is not None and first.refund_reference.startswith("re_")
    assert first.failure is None
    again = await stack.gateway.refund(request)
    assert again.refund_reference == first.refund_reference
    assert (await stack.stats())["refunds_by_charge"][reference] == 1

    webhook = await stack.recorder.wait_for_event(first.refund_reference, "refund.succeeded")
    verify(webhook.headers["sandbox-signature"], webhook.body, [WEBHOOK_SECRET], 60, time.time())
    data = webhook.json()["data"]
    assert (data["charge"], data["amount"], data["reason"]) == (
        reference,
        1000,
        "requested_by_customer",
    )
    assert data["metadata"] == {"payment_id": request.payment_id, "refund_id": "ref_test"}
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.refund is not None
    assert (event.refund.state, event.refund.refund_id, event.refund.refund_reference) == (
        RefundState.SUCCEEDED,
        "ref_test",
        first.refund_reference,
    )
    assert (event.payment_id, event.gateway_reference) == (request.payment_id, reference)
    settled = await stack.gateway.refund(request)
    assert settled.state is RefundState.SUCCEEDED
    looked_up = await stack.gateway.retrieve_refund(
        RefundLookup(gateway=GatewayName.SANDBOX, refund_reference=first.refund_reference)
    )
    assert looked_up.state is RefundState.SUCCEEDED


async def test_over_refund_is_a_failed_outcome(stack: Stack) -> None:
    """A refund beyond what is left of the charge is FAILED with the sandbox's reason."""
    reference = await succeeded_charge(stack)
    assert (await stack.gateway.refund(refund_request(reference, amount_minor=4000))).state is (
        RefundState.PENDING
    )
    over = await stack.gateway.refund(refund_request(reference, amount_minor=201))
    assert over.state is RefundState.FAILED
    assert over.refund_reference is None
    assert over.failure is not None
    assert (over.failure.code, over.failure.retryable) == ("refund_exceeds_charge", False)


async def test_refund_of_an_unsettled_charge_is_a_failed_outcome(stack: Stack) -> None:
    """Refunding a charge that has not succeeded is FAILED with charge_not_refundable."""
    pending = await stack.gateway.charge(charge_request("pm_sandbox_silent"))
    assert pending.gateway_reference is not None
    outcome = await stack.gateway.refund(refund_request(pending.gateway_reference))
    assert outcome.state is RefundState.FAILED
    assert outcome.failure is not None
    assert outcome.failure.code == "charge_not_refundable"


async def test_scripted_refund_failure_arrives_by_webhook(stack: Stack) -> None:
    """A refund of a pm_sandbox_refund_fails charge ends FAILED, announced by refund.failed."""
    reference = await succeeded_charge(stack, "pm_sandbox_refund_fails")
    request = refund_request(reference)
    created = await stack.gateway.refund(request)
    assert created.state is RefundState.PENDING
    assert created.refund_reference is not None
    webhook = await stack.recorder.wait_for_event(created.refund_reference, "refund.failed")
    [event] = stack.verifier.verify(webhook.headers, webhook.body)
    assert event.refund is not None and event.refund.state is RefundState.FAILED
    assert event.refund.failure is not None and event.refund.failure.code == "refund_declined"
    failed = await stack.gateway.refund(request)  # The replay reports the final state.
    assert failed.state is RefundState.FAILED
    assert failed.failure is not None
    assert (failed.failure.code, failed.failure.retryable) == ("refund_declined", False)


async def test_refund_request_errors_are_not_retryable(stack: Stack) -> None:
    """An unknown charge or a refund key reused for another amount is a GatewayRequestError."""
    with pytest.raises(GatewayRequestError, match="404 not_found") as caught:
        await stack.gateway.refund(refund_request("ch_missing"))
    assert not caught.value.retryable
    reference = await succeeded_charge(stack)
    request = refund_request(reference)
    await stack.gateway.refund(request)
    reused = refund_request(reference, idempotency_key=request.idempotency_key, amount_minor=5)
    with pytest.raises(GatewayRequestError, match="idempotency_conflict"):
        await stack.gateway.refund(reused)
