"""Which gateways this deployment can route to, built from settings."""

from __future__ import annotations

import httpx

from gateways.base import Gateway
from gateways.sandbox import SandboxGateway
from paytide.settings import Settings
from workflows.contract import GatewayName


def build_gateways(settings: Settings, http: httpx.AsyncClient) -> dict[GatewayName, Gateway]:
    gateways: dict[GatewayName, Gateway] = {
        GatewayName.SANDBOX: SandboxGateway(
            http,
            base_url=settings.effective_sandbox_url,
            api_key=settings.sandbox_api_key.get_secret_value(),
        ),
    }
    return gateways
