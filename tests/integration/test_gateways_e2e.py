"""Stripe and Adyen end to end: API, worker, dev server, ledger, and each SDK talking to a local
server that answers as the real API does and sends real signed webhooks back to our API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.testing import WorkflowEnvironment

from tests.integration.stack import Stack, running_stack
from tests.support.adyen_server import AdyenServer
from tests.support.serve import bound_socket, serve, url_of
from tests.support.stripe_server import FakeStripe, StripeServerConfig

STRIPE_KEY = "sk_test_e2e"
STRIPE_SECRET = "whsec_e2e_stripe"
ADYEN_KEY = "adyen_e2e_key"
ADYEN_ACCOUNT = "PaytideECOM"
ADYEN_HMAC = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ADYEN_USER = "adyen-webhooks"
ADYEN_PASSWORD = "adyen-webhook-password"


@asynccontextmanager
async def gateway_stack(
    dev_env: WorkflowEnvironment,
    database_url: str,
    routing: list[dict[str, Any]],
    *,
    stripe_outage: bool = False,
) -> AsyncIterator[tuple[Stack, FakeStripe, AdyenServer]]:
    api_sock = bound_socket()
    api = url_of(api_sock)
    stripe = FakeStripe(
        StripeServerConfig(
            api_key=STRIPE_KEY,
            webhook_secret=STRIPE_SECRET,
            webhook_url=f"{api}/webhooks/stripe",
            settle_after=0.2,
            outage=stripe_outage,
        )
    )
    adyen = AdyenServer(
        api_key=ADYEN_KEY,
        merchant_account=ADYEN_ACCOUNT,
        hmac_key=ADYEN_HMAC,
        webhook_username=ADYEN_USER,
        webhook_password=ADYEN_PASSWORD,
        webhook_url=f"{api}/webhooks/adyen",
        settle_after=0.2,
    )
    async with serve(stripe.app) as stripe_url, serve(adyen.app) as adyen_url:
        async with running_stack(
            dev_env.client,
            database_url,
            api_sock=api_sock,
            routing=routing,
            stripe_api_key=STRIPE_KEY,
            stripe_api_base=stripe_url,
            stripe_webhook_secrets=STRIPE_SECRET,
            adyen_api_key=ADYEN_KEY,
            adyen_merchant_account=ADYEN_ACCOUNT,
            adyen_checkout_url=adyen_url,
            adyen_hmac_keys=ADYEN_HMAC,
            adyen_webhook_username=ADYEN_USER,
            adyen_webhook_password=ADYEN_PASSWORD,
            gateway_max_attempts=2,
        ) as stack:
            yield stack, stripe, adyen


async def test_stripe_payment_completes_on_its_signed_webhook(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A Stripe PaymentIntent that is processing succeeds on a signed payment_intent.succeeded."""
    async with gateway_stack(dev_env, database_url, [{"gateways": ["stripe"]}]) as (
        stack,
        stripe,
        _,
    ):
        created = await stack.pay(payment_method="pm_card_async", currency="EUR")
        assert created.status_code == 201, created.text
        payment = created.json()
        assert payment["gateway"] == "stripe"
        assert payment["status"] == "awaiting_webhook"
        assert payment["gateway_reference"].startswith("pi_")

        final = await stack.wait_final(payment["id"])

        assert final["status"] == "succeeded"
        assert ("payment_intent.succeeded", "signalled") in stack.webhook_deliveries(payment["id"])
        assert sum(stripe.created_per_key.values()) == 1


async def test_adyen_payment_completes_on_its_signed_notification(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """An Adyen payment that is Received succeeds on a signed AUTHORISATION notification."""
    async with gateway_stack(dev_env, database_url, [{"gateways": ["adyen"]}]) as (
        stack,
        _,
        adyen,
    ):
        created = await stack.pay(payment_method="adyen_async", currency="EUR")
        assert created.status_code == 201, created.text
        payment = created.json()
        assert payment["gateway"] == "adyen"
        assert payment["status"] == "awaiting_webhook"

        final = await stack.wait_final(payment["id"])

        assert final["status"] == "succeeded"
        assert ("AUTHORISATION", "signalled") in stack.webhook_deliveries(payment["id"])
        assert sum(adyen.payments_created.values()) == 1


async def test_adyen_notification_endpoint_answers_accepted(
    dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """A forged or unauthenticated Adyen batch is refused; a signed one is answered [accepted]."""
    async with gateway_stack(dev_env, sqlite_url, [{"gateways": ["adyen"]}]) as (stack, _, _):
        unsigned = {"live": "false", "notificationItems": []}
        refused = await stack.api.post("/webhooks/adyen", content=json.dumps(unsigned))
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] in {"missing_auth", "bad_auth"}

        created = (await stack.pay(payment_method="adyen_async", currency="EUR")).json()
        await stack.wait_final(created["id"])
        # The fake Adyen stops re-sending only on "[accepted]"; one delivery means it got it.
        deliveries = stack.webhook_deliveries(created["id"])
        assert deliveries.count(("AUTHORISATION", "signalled")) == 1


async def test_failover_to_adyen_when_stripe_answers_503_charges_once(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Stripe in an outage (503 before processing): the payment succeeds on Adyen, one charge."""
    routing = [{"currency": "EUR", "gateways": ["stripe", "adyen"]}]
    async with gateway_stack(dev_env, database_url, routing, stripe_outage=True) as (
        stack,
        stripe,
        adyen,
    ):
        created = await stack.pay(payment_method="adyen_ok", currency="EUR")
        assert created.status_code in (201, 202), created.text
        payment_id = created.json()["id"]

        final = await stack.wait_final(payment_id, within=60)

        assert final["status"] == "succeeded"
        assert final["gateway"] == "adyen"
        assert sum(stripe.created_per_key.values()) == 0
        assert sum(adyen.payments_created.values()) == 1
        charging = [status for status in stack.ledger_statuses(payment_id) if status == "charging"]
        assert len(charging) == 2


async def refund_settled(stack: Stack, payment_id: str, amount: int) -> dict[str, Any]:
    created = await stack.api.post(
        f"/payments/{payment_id}/refunds",
        json={"amount": amount, "reason": "requested_by_customer"},
        headers={"Idempotency-Key": f"refund-{payment_id}"},
    )
    assert created.status_code == 201, created.text
    async with asyncio.timeout(30):
        while True:
            refund: dict[str, Any] = (
                await stack.api.get(f"/payments/{payment_id}/refunds/{created.json()['id']}")
            ).json()
            if refund["status"] != "pending":
                return refund
            await asyncio.sleep(0.1)


async def test_stripe_refund_is_made_and_its_webhook_routed(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A refund of a Stripe payment is made with our refund id in metadata; Stripe's signed
    refund.updated reaches the refund's workflow (or finds it already settled)."""
    async with gateway_stack(dev_env, database_url, [{"gateways": ["stripe"]}]) as (
        stack,
        stripe,
        _,
    ):
        created = await stack.pay(payment_method="pm_card_async", currency="EUR")
        payment = await stack.wait_final(created.json()["id"])
        assert payment["status"] == "succeeded"

        refund = await refund_settled(stack, payment["id"], 500)

        assert refund["status"] == "succeeded"
        assert refund["gateway_reference"].startswith("re_")
        made = stripe.refunds[refund["gateway_reference"]]
        assert made["metadata"]["refund_id"] == refund["id"]
        shown = (await stack.api.get(f"/payments/{payment['id']}")).json()
        assert shown["status"] == "partially_refunded"
        async with asyncio.timeout(10):
            while not any(
                t == "refund.updated" for t, _ in stack.webhook_deliveries(payment["id"])
            ):
                await asyncio.sleep(0.1)
        deliveries = dict(stack.webhook_deliveries(payment["id"]))
        assert deliveries["refund.updated"] in {"signalled", "refund_closed"}


async def test_adyen_refund_settles_on_its_refund_notification(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """An Adyen refund is received (pending) and settles on the signed REFUND notification,
    routed by the refund id Adyen echoes as merchantReference."""
    async with gateway_stack(dev_env, database_url, [{"gateways": ["adyen"]}]) as (
        stack,
        _,
        adyen,
    ):
        created = await stack.pay(payment_method="adyen_async", currency="EUR")
        payment = await stack.wait_final(created.json()["id"])
        assert payment["status"] == "succeeded"

        refund = await refund_settled(stack, payment["id"], payment["amount"])

        assert refund["status"] == "succeeded"
        assert ("REFUND", "signalled") in stack.webhook_deliveries(payment["id"])
        shown = (await stack.api.get(f"/payments/{payment['id']}")).json()
        assert shown["status"] == "refunded"
        assert sum(adyen.modifications_created.values()) == 1
