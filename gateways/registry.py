"""Which gateways this deployment can route to, built from settings.

A gateway without credentials is not available: routing skips it and ``/readyz`` says so.
"""

from __future__ import annotations

import httpx

from gateways.base import Gateway, WebhookVerifier
from gateways.sandbox import SandboxGateway, SandboxWebhookVerifier
from paytide.settings import Settings
from workflows.contract import GatewayName


def available_gateways(settings: Settings) -> dict[GatewayName, str]:
    """Every gateway with a word on its availability (an empty word means available)."""
    status = {GatewayName.SANDBOX: ""}
    status[GatewayName.STRIPE] = "" if settings.stripe_api_key else "PAYTIDE_STRIPE_API_KEY unset"
    adyen_missing = [
        name
        for name, value in (
            ("PAYTIDE_ADYEN_API_KEY", settings.adyen_api_key),
            ("PAYTIDE_ADYEN_MERCHANT_ACCOUNT", settings.adyen_merchant_account),
        )
        if not value
    ]
    status[GatewayName.ADYEN] = f"{', '.join(adyen_missing)} unset" if adyen_missing else ""
    return status


def usable(settings: Settings) -> set[GatewayName]:
    return {name for name, why_not in available_gateways(settings).items() if not why_not}


def build_gateways(settings: Settings, http: httpx.AsyncClient) -> dict[GatewayName, Gateway]:
    gateways: dict[GatewayName, Gateway] = {
        GatewayName.SANDBOX: SandboxGateway(
            http,
            base_url=settings.effective_sandbox_url,
            api_key=settings.sandbox_api_key.get_secret_value(),
        ),
    }
    return gateways


def build_verifiers(settings: Settings) -> dict[GatewayName, WebhookVerifier]:
    verifiers: dict[GatewayName, WebhookVerifier] = {
        GatewayName.SANDBOX: SandboxWebhookVerifier(
            [settings.sandbox_webhook_secret.get_secret_value()],
            tolerance_seconds=settings.webhook_tolerance,
        ),
    }
    return verifiers
