"""Which gateways this deployment can route to, built from settings.

A gateway without credentials is not available: routing skips it and ``/readyz`` says so.
"""

from __future__ import annotations

import httpx

from gateways.adyen import AdyenGateway, AdyenWebhookVerifier
from gateways.base import Gateway, WebhookVerifier
from gateways.sandbox import SandboxGateway, SandboxWebhookVerifier
from gateways.stripe import StripeGateway, StripeWebhookVerifier
from paytide.settings import Settings
from workflows.contract import GatewayName


def available_gateways(settings: Settings) -> dict[GatewayName, str]:
    """Every gateway with a word on its availability (an empty word means available). The
    sandbox is available only where it is enabled (PAYTIDE_SANDBOX_ENABLED; off in production)."""
    return {GatewayName(name): why_not for name, why_not in settings.gateway_status.items()}


def usable(settings: Settings) -> set[GatewayName]:
    return {name for name, why_not in available_gateways(settings).items() if not why_not}


def build_gateways(settings: Settings, http: httpx.AsyncClient) -> dict[GatewayName, Gateway]:
    gateways: dict[GatewayName, Gateway] = {}
    # An SDK call must give up before the activity's own timeout, so the activity can retry.
    call_timeout = max(1.0, settings.gateway_call_timeout * 0.8)
    available = usable(settings)
    if GatewayName.SANDBOX in available:
        gateways[GatewayName.SANDBOX] = SandboxGateway(
            http,
            base_url=settings.effective_sandbox_url,
            api_key=settings.sandbox_api_key.get_secret_value(),
        )
    if GatewayName.STRIPE in available and settings.stripe_api_key is not None:
        gateways[GatewayName.STRIPE] = StripeGateway(
            settings.stripe_api_key.get_secret_value(),
            settings.stripe_api_base,
            timeout_seconds=call_timeout,
            http=http,
        )
    if GatewayName.ADYEN in available and settings.adyen_api_key is not None:
        gateways[GatewayName.ADYEN] = AdyenGateway(
            settings.adyen_api_key.get_secret_value(),
            settings.adyen_merchant_account,
            environment=settings.adyen_environment,
            live_url_prefix=settings.adyen_live_url_prefix,
            checkout_url=settings.adyen_checkout_url or None,
            timeout_seconds=call_timeout / 2,  # the adapter bounds the whole call at twice this
        )
    return gateways


def build_verifiers(settings: Settings) -> dict[GatewayName, WebhookVerifier]:
    verifiers: dict[GatewayName, WebhookVerifier] = {}
    # No sandbox verifier where the sandbox is off: /webhooks/sandbox answers 404 there.
    if GatewayName.SANDBOX in usable(settings):
        verifiers[GatewayName.SANDBOX] = SandboxWebhookVerifier(
            settings.sandbox_webhook_secret_list,
            tolerance_seconds=settings.webhook_tolerance,
        )
    if settings.stripe_webhook_secret_list:
        verifiers[GatewayName.STRIPE] = StripeWebhookVerifier(
            settings.stripe_webhook_secret_list, settings.webhook_tolerance
        )
    if settings.adyen_hmac_key_list and settings.adyen_webhook_password is not None:
        verifiers[GatewayName.ADYEN] = AdyenWebhookVerifier(
            settings.adyen_hmac_key_list,
            settings.adyen_webhook_username,
            settings.adyen_webhook_password.get_secret_value(),
        )
    return verifiers


def routed(settings: Settings) -> set[GatewayName]:
    """Every gateway some routing rule can send a payment to."""
    return {GatewayName(name) for rule in settings.routing for name in rule.gateways}
