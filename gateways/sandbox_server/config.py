"""How one sandbox gateway instance behaves: credentials, webhook target and scripted timings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    # Kept out of repr so a config in a traceback or log line never shows a credential.
    api_key: str = field(repr=False)
    webhook_url: str
    webhook_secret: str = field(repr=False)
    # Seconds between a charge reaching its outcome and the webhook announcing it.
    webhook_delay: float
    # Seconds `pm_sandbox_slow` holds the request before answering.
    slow_delay: float
    # How many requests per idempotency key `pm_sandbox_flaky` answers with 503.
    flaky_failures: int
    webhook_max_attempts: int = 8
