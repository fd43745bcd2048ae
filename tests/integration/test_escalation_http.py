"""Escalations over real HTTP: the operators' signed alert and the merchant's endpoint event for
needs_attention and conflicted, and a payment the ledger refuses that ends within seconds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api import idempotency
from gateways.sandbox_server.webhooks import SIGNATURE_HEADER
from gateways.signing import sign, verify
from tests.integration.stack import Stack, running_stack
from tests.support.serve import serve
from tests.support.webhook_recorder import ReceivedWebhook, WebhookRecorder
from workflows.contract import PaymentInput, PaymentRequest, WorkflowSettings
from workflows.payment import PaymentWorkflow

OPS_SECRET = "whsec_ops_escalation"
FAST: dict[str, Any] = {
    "webhook_timeout": 0.5,
    "max_webhook_wait": 1.5,
    "webhook_retry_initial": 0.2,
    "webhook_retry_max_interval": 0.5,
}


@pytest.fixture
async def ops() -> AsyncIterator[tuple[WebhookRecorder, str]]:
    """The operators' alert receiver; it answers 400 to an alert whose signature fails."""
    recorder = WebhookRecorder()
    recorder.secrets = [OPS_SECRET]
    async with serve(recorder.app) as url:
        yield recorder, f"{url}/webhooks"


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[WebhookRecorder, str]]:
    recorder = WebhookRecorder()
    async with serve(recorder.app) as url:
        yield recorder, f"{url}/webhooks"


async def arrival(
    recorder: WebhookRecorder, kind: str, payment_id: str, within: float = 30
) -> ReceivedWebhook:
    """The first delivered event of ``kind`` about ``payment_id``."""
    async with asyncio.timeout(within):
        while True:
            for webhook in recorder.delivered:
                body = webhook.json()
                if body["type"] == kind and body["data"]["id"] == payment_id:
                    return webhook
            await asyncio.sleep(0.1)


async def forge_amount(stack: Stack, payment_id: str) -> None:
    """The sandbox's signed charge.succeeded for the payment's charge, with another amount."""
    payment = (await stack.api.get(f"/payments/{payment_id}")).json()
    charge = (await stack.sandbox.get(f"/v1/charges/{payment['gateway_reference']}")).json()
    event = {
        "id": f"evt_conflict_{uuid.uuid4().hex[:16]}",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "data": {
            **charge,
            "status": "succeeded",
            "amount": charge["amount"] + 1,
            "amount_captured": charge["amount"] + 1,
        },
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    answer = await stack.api.post(
        "/webhooks/sandbox",
        content=body,
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        },
    )
    assert answer.status_code == 200, answer.text


def counted(stack: Stack, name: str, **labels: str) -> float:
    return stack.worker_metrics.registry.get_sample_value(name, labels) or 0.0


async def test_needs_attention_then_conflicted_alert_operators_and_reach_endpoints(
    dev_env: WorkflowEnvironment,
    database_url: str,
    ops: tuple[WebhookRecorder, str],
    endpoint: tuple[WebhookRecorder, str],
) -> None:
    """A silent charge escalated to needs_attention, then settled with another amount: the
    operators get each escalation as a signed alert, the merchant's endpoint gets
    payment.needs_attention and payment.conflicted, and the callback payment.conflicted."""
    ops_recorder, ops_url = ops
    receiver, receiver_url = endpoint
    merchant = f"esc-{uuid.uuid4().hex[:10]}"
    settings = {**FAST, "ops_alert_url": ops_url, "ops_alert_secret": OPS_SECRET}
    # The endpoint's receiver listens on this machine (127.0.0.1).
    settings["webhook_allow_loopback"] = True
    async with running_stack(
        dev_env.client, database_url, default_merchant=merchant, **settings
    ) as stack:
        created = await stack.api.post(
            "/webhook-endpoints",
            json={"url": receiver_url, "events": ["payment.needs_attention", "payment.conflicted"]},
        )
        assert created.status_code == 201, created.text
        receiver.secrets = [created.json()["secret"]]
        paid = await stack.pay(payment_method="pm_sandbox_silent")
        assert paid.status_code in (201, 202), paid.text
        payment_id = paid.json()["id"]

        alert = await arrival(ops_recorder, "payment.needs_attention", payment_id)
        verify(alert.headers["paytide-signature"], alert.body, [OPS_SECRET], 300, time.time())
        assert alert.json()["data"]["status"] == "needs_attention"
        assert "maximum wait" in alert.json()["data"]["reason"]
        told = await arrival(receiver, "payment.needs_attention", payment_id)
        assert told.json()["data"]["status"] == "needs_attention"
        assert (await stack.api.get(f"/payments/{payment_id}")).json()["status"] == (
            "needs_attention"
        )

        await forge_amount(stack, payment_id)
        final = await stack.wait_final(payment_id)
        assert final["status"] == "conflicted"
        alert = await arrival(ops_recorder, "payment.conflicted", payment_id)
        verify(alert.headers["paytide-signature"], alert.body, [OPS_SECRET], 300, time.time())
        assert "gateway reported" in alert.json()["data"]["reason"]
        await arrival(receiver, "payment.conflicted", payment_id)
        await arrival(stack.merchant, "payment.conflicted", payment_id)

    assert ops_recorder.received and all(w.status == 200 for w in ops_recorder.received)
    assert counted(stack, "paytide_operator_alerts_total", kind="payment.needs_attention") == 1
    assert counted(stack, "paytide_operator_alerts_total", kind="payment.conflicted") == 1


async def test_a_nul_byte_the_edge_missed_ends_the_payment_within_seconds(
    dev_env: WorkflowEnvironment, postgres_url: str, ops: tuple[WebhookRecorder, str]
) -> None:
    """PaymentWorkflow started past the API with a NUL in its description (PostgreSQL refuses
    it): the workflow fails within seconds with payment_not_admitted instead of retrying for
    ever, the operators get a signed alert, it is counted, and POST /payments with the same key
    answers 422 payment_not_admitted instead of a payment that never appears."""
    ops_recorder, ops_url = ops
    merchant = f"nul-{uuid.uuid4().hex[:10]}"
    settings = {"ops_alert_url": ops_url, "ops_alert_secret": OPS_SECRET}
    async with running_stack(
        dev_env.client, postgres_url, default_merchant=merchant, **settings
    ) as stack:
        key = uuid.uuid4().hex
        workflow_id = idempotency.workflow_id(merchant, key)
        request = PaymentRequest(
            payment_id=idempotency.payment_id(workflow_id),
            merchant_id=merchant,
            idempotency_key=key,
            fingerprint=f"fp-{key}",
            amount_minor=1999,
            currency="USD",
            customer_id="cus_nul",
            payment_method="pm_sandbox_ok",
            order_id="order_nul",
            description="gift\x00card",
        )
        client: Client = dev_env.client
        handle = await client.start_workflow(
            PaymentWorkflow.run,
            PaymentInput(request=request, settings=WorkflowSettings()),
            id=workflow_id,
            task_queue=stack.settings.temporal_task_queue,
        )
        started = time.monotonic()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=15)
        assert time.monotonic() - started < 15
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "payment_not_admitted"
        assert "NUL" in cause.message

        alert = await arrival(ops_recorder, "payment.not_admitted", request.payment_id)
        verify(alert.headers["paytide-signature"], alert.body, [OPS_SECRET], 300, time.time())
        assert "NUL" in alert.json()["data"]["reason"]
        assert counted(stack, "paytide_payments_ended_unrecoverable_total", step="admission") == 1
        assert stack.ledger_statuses(request.payment_id) == []

        again = await stack.pay(key)
        assert again.status_code == 422, again.text
        assert again.json()["error"]["code"] == "payment_not_admitted"
        assert "new Idempotency-Key" in again.json()["error"]["message"]
