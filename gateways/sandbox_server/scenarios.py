"""Test payment-method tokens and the processor behaviour each one scripts."""

from __future__ import annotations

from enum import StrEnum

PAYMENT_METHOD_PREFIX = "pm_"


class Scenario(StrEnum):
    # Pending, then a webhook with the final outcome after `webhook_delay`.
    OK = "ok"
    # Declined at once with `card_declined`.
    DECLINE = "decline"
    # Needs a 3-D Secure challenge completed through `POST /v1/charges/{id}/3ds`.
    THREE_DS = "3ds"
    # Pending forever, no webhook: the caller has to poll (reconcile).
    SILENT = "silent"
    # 503 before any charge exists, for the first `flaky_failures` requests of a key.
    FLAKY = "flaky"
    # Like OK after holding the request for `slow_delay`, to provoke client timeouts.
    SLOW = "slow"
    # The first charge of a reference fails as retryable; a new attempt (new key) succeeds.
    RETRYABLE = "retryable"
    # Settled in the charge answer itself (succeeded, or authorized with manual capture).
    INSTANT = "instant"
    # 503 for every request, before any charge exists: the processor is down.
    UNAVAILABLE = "unavailable"
    # Like INSTANT, but every refund of the charge ends failed (`refund.failed`).
    REFUND_FAILS = "refund_fails"


_TOKENS: dict[str, Scenario] = {
    "pm_sandbox_ok": Scenario.OK,
    "pm_sandbox_decline": Scenario.DECLINE,
    "pm_sandbox_3ds": Scenario.THREE_DS,
    "pm_sandbox_silent": Scenario.SILENT,
    "pm_sandbox_flaky": Scenario.FLAKY,
    "pm_sandbox_slow": Scenario.SLOW,
    "pm_sandbox_retryable": Scenario.RETRYABLE,
    "pm_sandbox_instant": Scenario.INSTANT,
    "pm_sandbox_unavailable": Scenario.UNAVAILABLE,
    "pm_sandbox_refund_fails": Scenario.REFUND_FAILS,
}


def scenario_for(payment_method: str) -> Scenario | None:
    """The scripted behaviour of a token; None when the value is not a payment-method token."""
    if not payment_method.startswith(PAYMENT_METHOD_PREFIX):
        return None
    # Any other well-formed token approves, like a real test card that is not special-cased.
    return _TOKENS.get(payment_method, Scenario.OK)
