"""The contract suite's sandbox: our own sandbox service served over real HTTP, its webhooks
posted to a recorder, and `SandboxGateway` / `SandboxWebhookVerifier` in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from gateways.sandbox import SandboxGateway, SandboxWebhookVerifier
from gateways.sandbox_server import SandboxConfig, create_sandbox_app
from tests.contract.harness import GatewayHarness, Scenario
from tests.support.serve import serve
from tests.support.webhook_recorder import ReceivedWebhook, WebhookRecorder

API_KEY = "sk_sandbox_contract"
WEBHOOK_SECRET = "whsec_sandbox_contract"
# The contract's FLAKY scenario answers 503 twice before it charges.
FLAKY_FAILURES = 2
SUCCESS_EVENTS = frozenset({"charge.succeeded", "charge.authorized"})

PAYMENT_METHODS = {
    Scenario.OK: "pm_sandbox_ok",
    Scenario.SUCCEED_AT_ONCE: "pm_sandbox_instant",
    Scenario.DECLINE: "pm_sandbox_decline",
    Scenario.ACTION: "pm_sandbox_3ds",
    Scenario.FLAKY: "pm_sandbox_flaky",
    Scenario.UNAVAILABLE: "pm_sandbox_unavailable",
}


@dataclass(frozen=True)
class SandboxHarness:
    gateway: SandboxGateway
    verifier: SandboxWebhookVerifier
    sandbox_url: str
    client: httpx.AsyncClient
    recorder: WebhookRecorder

    def payment_method(self, scenario: Scenario) -> str:
        return PAYMENT_METHODS[scenario]

    async def settle(self, gateway_reference: str) -> tuple[dict[str, str], bytes]:
        charge = await self._get(f"/v1/charges/{gateway_reference}")
        if charge["status"] == "requires_action":
            # The customer's browser passes the challenge, holding only the client secret.
            completed = await self.client.post(
                charge["next_action"]["redirect_url"],
                json={"client_secret": charge["client_secret"], "result": "success"},
            )
            completed.raise_for_status()
        # A pending charge settles by itself after the webhook delay; wait for its webhook.

        def announces_success(webhook: ReceivedWebhook) -> bool:
            event = webhook.json()
            return bool(
                event["type"] in SUCCESS_EVENTS and event["data"]["id"] == gateway_reference
            )

        webhook = await self.recorder.wait_for(announces_success)
        return webhook.headers, webhook.body

    async def charges_created(self, idempotency_key: str) -> int:
        stats = await self._get("/v1/stats")
        return int(stats["charges_by_key"].get(idempotency_key, 0))

    async def _get(self, path: str) -> dict[str, Any]:
        response = await self.client.get(
            f"{self.sandbox_url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


@asynccontextmanager
async def running() -> AsyncIterator[GatewayHarness]:
    """Serve a fresh sandbox and a webhook recorder for one test."""
    recorder = WebhookRecorder()
    async with serve(recorder.app) as receiver_url:
        config = SandboxConfig(
            api_key=API_KEY,
            webhook_url=f"{receiver_url}/webhooks",
            webhook_secret=WEBHOOK_SECRET,
            webhook_delay=0.02,
            slow_delay=0.5,
            flaky_failures=FLAKY_FAILURES,
        )
        async with (
            serve(create_sandbox_app(config)) as sandbox_url,
            httpx.AsyncClient(timeout=10) as client,
        ):
            yield SandboxHarness(
                gateway=SandboxGateway(client, sandbox_url, API_KEY),
                verifier=SandboxWebhookVerifier([WEBHOOK_SECRET], tolerance_seconds=300),
                sandbox_url=sandbox_url,
                client=client,
                recorder=recorder,
            )
