"""The Adyen adapter against the Adyen-shaped server (`tests.support.adyen_server`), served over
real HTTP on loopback."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateways.adyen import AdyenGateway, AdyenWebhookVerifier, adyen_idempotency_key
from tests.contract.harness import GatewayHarness, Scenario
from tests.support.adyen_server import AdyenServer, Token
from tests.support.serve import serve

API_KEY = "adyen_contract_api_key"
MERCHANT_ACCOUNT = "PaytideContractECOM"
WEBHOOK_USERNAME = "adyen-contract"
WEBHOOK_PASSWORD = "adyen-contract-password"

TOKENS = {
    Scenario.OK: Token.ASYNC,
    Scenario.SUCCEED_AT_ONCE: Token.OK,
    Scenario.DECLINE: Token.REFUSED,
    Scenario.ACTION: Token.THREE_DS,
    Scenario.FLAKY: Token.FLAKY,
    Scenario.UNAVAILABLE: Token.UNAVAILABLE,
}


@dataclass
class AdyenHarness:
    gateway: AdyenGateway
    verifier: AdyenWebhookVerifier
    server: AdyenServer

    def payment_method(self, scenario: Scenario) -> str:
        return TOKENS[scenario].value

    async def settle(self, gateway_reference: str) -> tuple[dict[str, str], bytes]:
        return self.server.settle(gateway_reference)

    async def charges_created(self, idempotency_key: str) -> int:
        # The server counts by the header it received, which is what the adapter sends.
        return self.server.payments_created[adyen_idempotency_key(idempotency_key)]


@asynccontextmanager
async def running() -> AsyncIterator[GatewayHarness]:
    hmac_key = secrets.token_hex(32).upper()
    server = AdyenServer(
        api_key=API_KEY,
        merchant_account=MERCHANT_ACCOUNT,
        hmac_key=hmac_key,
        webhook_username=WEBHOOK_USERNAME,
        webhook_password=WEBHOOK_PASSWORD,
    )
    async with serve(server.app) as url:
        yield AdyenHarness(
            gateway=AdyenGateway(API_KEY, MERCHANT_ACCOUNT, checkout_url=url, timeout_seconds=5.0),
            verifier=AdyenWebhookVerifier([hmac_key], WEBHOOK_USERNAME, WEBHOOK_PASSWORD),
            server=server,
        )
