"""What the gateway contract suite needs from each gateway: the adapter under test, its webhook
verifier, and a local server that answers as the real gateway's API does (or the sandbox itself).

Each gateway has a module ``tests/contract/harness_<gateway>.py`` with
``def running() -> AbstractAsyncContextManager[GatewayHarness]``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from gateways.base import Gateway, WebhookVerifier


class Scenario(StrEnum):
    """Behaviours every gateway can be scripted into through the payment method it is given."""

    OK = "ok"  # settles asynchronously: pending at first, then a success webhook
    SUCCEED_AT_ONCE = "succeed_at_once"  # succeeded in the charge answer itself
    DECLINE = "decline"  # declined in the charge answer
    ACTION = "action"  # requires a customer action (3-D Secure)
    FLAKY = "flaky"  # the first two requests answer 503 before anything is created
    UNAVAILABLE = "unavailable"  # every request answers 503 before anything is created


class GatewayHarness(Protocol):
    @property
    def gateway(self) -> Gateway: ...

    @property
    def verifier(self) -> WebhookVerifier: ...

    def payment_method(self, scenario: Scenario) -> str:
        """The token that scripts ``scenario`` on this gateway's server."""
        ...

    async def settle(self, gateway_reference: str) -> tuple[dict[str, str], bytes]:
        """Complete a pending or challenged charge on the server as a success, and return the
        signed webhook (headers, body) the real gateway would send for it."""
        ...

    async def charges_created(self, idempotency_key: str) -> int:
        """How many charges the server created for requests carrying this idempotency key."""
        ...
