"""The one `Gateway` protocol every adapter implements, and the errors adapters raise.

A decline or a 3-D Secure challenge is an outcome (`ChargeOutcome`), never an exception. The
exceptions here are transport trouble, and each knows whether retrying can help: retryability is
decided where the error is born, then translated once at the activity edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from workflows.contract import (
    CancelRequest,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    GatewayEvent,
    GatewayName,
    RefundLookup,
    RefundOutcome,
    RefundRequest,
)


class GatewayError(Exception):
    retryable: bool = False
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayUnavailable(GatewayError):
    """5xx, timeout or connection failure: the same request may work later."""

    retryable = True


class GatewayRefused(GatewayUnavailable):
    """The request provably was not processed: connection refused, or a 503 answered before
    processing. Retry the same request; after the last retry, another gateway may be tried."""


class GatewayRateLimited(GatewayRefused):
    """429: not processed; retry after ``retry_after`` seconds when the gateway said so."""


class GatewayRequestError(GatewayError):
    """Our bug or bad credentials: retrying the same request cannot help."""

    retryable = False


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's delay in seconds. The HTTP-date form is legal but rare; None then,
    and the caller's own backoff applies."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class WebhookRejected(Exception):
    """A webhook failed verification; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Gateway(Protocol):
    @property
    def name(self) -> GatewayName: ...

    async def charge(self, request: ChargeRequest) -> ChargeOutcome: ...

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome: ...

    async def cancel(self, request: CancelRequest) -> ChargeOutcome: ...

    async def capture(self, request: CaptureRequest) -> ChargeOutcome: ...

    async def refund(self, request: RefundRequest) -> RefundOutcome: ...

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        """The refund's current state; PENDING when the gateway cannot tell (yet)."""
        ...


class WebhookVerifier(Protocol):
    @property
    def provider(self) -> GatewayName: ...

    def verify(self, headers: Mapping[str, str], body: bytes) -> list[GatewayEvent]:
        """Check the signature before parsing; raise `WebhookRejected` on any doubt."""
        ...
