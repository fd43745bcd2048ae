"""One fixture, one harness per gateway: every contract test runs against each adapter."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator

import pytest

from tests.contract.harness import GatewayHarness

GATEWAYS = ["sandbox", "stripe", "adyen"]


@pytest.fixture(params=GATEWAYS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[GatewayHarness]:
    module = importlib.import_module(f"tests.contract.harness_{request.param}")
    async with module.running() as running:
        yield running
