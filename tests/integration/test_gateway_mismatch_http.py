"""A verified event moves only payments (refunds) of its own gateway, over HTTP: a payment charged
on the Stripe-shaped server ignores a sandbox-signed event that names it, and settles on Stripe's
own event (API, worker, dev server, ledger on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from gateways.signing import sign
from ledger.engine import session_factory, transaction
from ledger.models import DisputeRecord
from tests.integration.stack import Stack, running_stack
from tests.support.serve import bound_socket, serve, url_of
from tests.support.stripe_server import ASYNC, FakeStripe, StripeServerConfig

STRIPE_KEY = "sk_test_mismatch"
STRIPE_SECRET = "whsec_mismatch_stripe"


@asynccontextmanager
async def stripe_stack(
    dev_env: WorkflowEnvironment, database_url: str
) -> AsyncIterator[tuple[Stack, FakeStripe]]:
    """Payments routed to Stripe, whose processing charges settle only when the test says so;
    the sandbox gateway (and its webhook endpoint) configured next to it."""
    api_sock = bound_socket()
    stripe = FakeStripe(
        StripeServerConfig(
            api_key=STRIPE_KEY,
            webhook_secret=STRIPE_SECRET,
            webhook_url=f"{url_of(api_sock)}/webhooks/stripe",
        )
    )
    async with (
        serve(stripe.app) as stripe_url,
        running_stack(
            dev_env.client,
            database_url,
            api_sock=api_sock,
            routing=[{"gateways": ["stripe"]}],
            stripe_api_key=STRIPE_KEY,
            stripe_api_base=stripe_url,
            stripe_webhook_secrets=STRIPE_SECRET,
        ) as stack,
    ):
        yield stack, stripe


async def sandbox_signed(stack: Stack, event: dict[str, Any]) -> httpx.Response:
    """``event`` POSTed to /webhooks/sandbox with a valid sandbox signature."""
    body = json.dumps(event).encode()
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    headers = {"Sandbox-Signature": sign(secret, body, int(time.time()))}
    return await stack.api.post("/webhooks/sandbox", content=body, headers=headers)


def mismatches(stack: Stack) -> float:
    count = stack.api_metrics.registry.get_sample_value(
        "paytide_webhook_events_total", {"gateway": "sandbox", "delivery": "gateway_mismatch"}
    )
    return count or 0.0


async def test_sandbox_event_naming_a_stripe_payment_does_not_settle_it(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A sandbox-signed charge.succeeded naming a Stripe payment's id and reference: 200,
    recorded and counted as gateway_mismatch, the payment keeps waiting; Stripe's own event then
    settles it."""
    async with stripe_stack(dev_env, database_url) as (stack, stripe):
        created = await stack.pay(payment_method=ASYNC, currency="EUR")
        assert created.status_code == 201, created.text
        payment = created.json()
        assert (payment["gateway"], payment["status"]) == ("stripe", "awaiting_webhook")
        forged = {
            "id": f"evt_{uuid.uuid4().hex[:20]}",
            "type": "charge.succeeded",
            "created": int(time.time()),
            "data": {
                "id": payment["gateway_reference"],
                "status": "succeeded",
                "amount": payment["amount"],
                "currency": "EUR",
                "reference": payment["id"],
                "metadata": {"payment_id": payment["id"]},
            },
        }

        answer = await sandbox_signed(stack, forged)

        assert answer.status_code == 200, answer.text
        await asyncio.sleep(1)  # time enough for a signalled workflow to have settled it
        shown = (await stack.api.get(f"/payments/{payment['id']}")).json()
        assert shown["status"] == "awaiting_webhook"
        assert "succeeded" not in stack.ledger_statuses(payment["id"])
        assert answer.json()["deliveries"] == ["gateway_mismatch"]
        assert ("charge.succeeded", "gateway_mismatch") in stack.webhook_deliveries(payment["id"])
        assert mismatches(stack) == 1

        stripe.settle(payment["gateway_reference"])
        final = await stack.wait_final(payment["id"])

        assert final["status"] == "succeeded"
        assert ("payment_intent.succeeded", "signalled") in stack.webhook_deliveries(payment["id"])


async def succeeded_on_stripe(stack: Stack, stripe: FakeStripe) -> dict[str, Any]:
    created = await stack.pay(payment_method=ASYNC, currency="EUR")
    assert created.status_code == 201, created.text
    stripe.settle(created.json()["gateway_reference"])
    payment = await stack.wait_final(created.json()["id"])
    assert payment["status"] == "succeeded", payment
    return payment


async def test_sandbox_event_naming_a_stripe_refund_is_not_delivered(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A sandbox-signed refund.failed naming a Stripe refund's id: 200, gateway_mismatch, and the
    refund stays as Stripe left it."""
    async with stripe_stack(dev_env, database_url) as (stack, stripe):
        payment = await succeeded_on_stripe(stack, stripe)
        refunded = await stack.api.post(
            f"/payments/{payment['id']}/refunds",
            json={"amount": 500},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert refunded.status_code == 201, refunded.text
        refund = refunded.json()
        forged = {
            "id": f"evt_{uuid.uuid4().hex[:20]}",
            "type": "refund.failed",
            "created": int(time.time()),
            "data": {
                "id": f"re_{uuid.uuid4().hex[:20]}",
                "charge": payment["gateway_reference"],
                "amount": 500,
                "currency": "EUR",
                "status": "failed",
                "metadata": {"payment_id": payment["id"], "refund_id": refund["id"]},
            },
        }

        answer = await sandbox_signed(stack, forged)

        assert answer.status_code == 200, answer.text
        assert answer.json()["deliveries"] == ["gateway_mismatch"]
        assert ("refund.failed", "gateway_mismatch") in stack.webhook_deliveries(payment["id"])
        shown = await stack.api.get(f"/payments/{payment['id']}/refunds/{refund['id']}")
        assert shown.json()["status"] == "succeeded"


async def test_sandbox_dispute_naming_a_stripe_payment_does_not_dispute_it(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A sandbox-signed dispute naming a Stripe payment: 200, gateway_mismatch, no dispute opened,
    the payment stays succeeded."""
    async with stripe_stack(dev_env, database_url) as (stack, stripe):
        payment = await succeeded_on_stripe(stack, stripe)
        reference = f"dp_{uuid.uuid4().hex[:20]}"
        forged = {
            "id": f"evt_{uuid.uuid4().hex[:20]}",
            "type": "dispute.created",
            "created": int(time.time()),
            "data": {
                "id": reference,
                "charge": payment["gateway_reference"],
                "status": "needs_response",
                "amount": payment["amount"],
                "currency": "EUR",
                "reason": "fraudulent",
                "metadata": {"payment_id": payment["id"]},
            },
        }

        answer = await sandbox_signed(stack, forged)

        assert answer.status_code == 200, answer.text
        await asyncio.sleep(1)  # time enough for a started dispute to have marked the payment
        assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == "succeeded"
        assert answer.json()["deliveries"] == ["gateway_mismatch"]
        with transaction(session_factory(stack.engine)) as session:
            found = session.exec(
                select(DisputeRecord).where(DisputeRecord.dispute_reference == reference)
            ).all()
        assert found == []
