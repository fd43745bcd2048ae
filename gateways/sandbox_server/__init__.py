"""The sandbox gateway: our own HTTP service that behaves like an asynchronous card processor.

Outcomes are scripted by the payment-method token (see `scenarios`), and final outcomes arrive as
signed webhooks, so paytide exercises the same code paths it uses with Stripe or Adyen. All state
lives in process memory: restarting the sandbox forgets every charge.
"""

from gateways.sandbox_server.app import create_sandbox_app
from gateways.sandbox_server.config import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app"]
