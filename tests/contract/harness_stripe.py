"""The Stripe adapter against the Stripe-shaped test server, for the gateway contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateways.stripe import StripeGateway, StripeWebhookVerifier
from tests.contract.harness import Scenario
from tests.support import stripe_server
from tests.support.serve import serve
from tests.support.stripe_server import FakeStripe, StripeServerConfig

TOKENS: dict[Scenario, str] = {
    Scenario.OK: stripe_server.ASYNC,
    Scenario.SUCCEED_AT_ONCE: stripe_server.VISA,
    Scenario.DECLINE: stripe_server.DECLINED,
    Scenario.ACTION: stripe_server.THREE_DS,
    Scenario.FLAKY: stripe_server.FLAKY,
    Scenario.UNAVAILABLE: stripe_server.UNAVAILABLE,
}


@dataclass
class StripeHarness:
    server: FakeStripe
    gateway: StripeGateway
    verifier: StripeWebhookVerifier

    def payment_method(self, scenario: Scenario) -> str:
        return TOKENS[scenario]

    async def settle(self, gateway_reference: str) -> tuple[dict[str, str], bytes]:
        return self.server.settle(gateway_reference)

    async def charges_created(self, idempotency_key: str) -> int:
        return self.server.created_per_key[idempotency_key]


@asynccontextmanager
async def running() -> AsyncIterator[StripeHarness]:
    config = StripeServerConfig(api_key="sk_test_contract", webhook_secret="whsec_contract")
    server = FakeStripe(config)
    async with serve(server.app) as url, StripeGateway(config.api_key, url) as gateway:
        yield StripeHarness(server, gateway, StripeWebhookVerifier([config.webhook_secret]))
