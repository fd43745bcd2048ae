"""A production configuration that passes every production rule: the base that production tests
start from, changing one thing at a time."""

from __future__ import annotations

import base64
from typing import Any

from paytide.settings import ENV_PREFIX, Settings

PAYLOAD_KEY_ID = "prod1"
PAYLOAD_KEY = base64.b64encode(b"production test key, not secret!").decode()
CODEC_TOKEN = "codec-token-for-production-tests"

# As the variables a deployment sets; Stripe is the one gateway (a fake key: never called here).
PRODUCTION_ENV = {
    "PAYTIDE_ENVIRONMENT": "production",
    "PAYTIDE_PAYLOAD_KEYS": f"{PAYLOAD_KEY_ID}:{PAYLOAD_KEY}",
    "PAYTIDE_SEARCH_HASH_KEY": "search-hash-key-for-production-tests",
    "PAYTIDE_CODEC_AUTH_TOKEN": CODEC_TOKEN,
    "PAYTIDE_STRIPE_API_KEY": "sk_test_production_tests",
    "PAYTIDE_STRIPE_WEBHOOK_SECRETS": "whsec_production_tests",
    "PAYTIDE_ROUTING": '[{"gateways": ["stripe"]}]',
}


def production_fields(**changes: Any) -> dict[str, Any]:
    """PRODUCTION_ENV as Settings keyword arguments, with ``changes`` applied."""
    fields: dict[str, Any] = {
        name.removeprefix(ENV_PREFIX).lower(): value for name, value in PRODUCTION_ENV.items()
    }
    fields["routing"] = [{"gateways": ["stripe"]}]
    fields.update(changes)
    return fields


def production_settings(**changes: Any) -> Settings:
    """Settings of a correct production deployment, with ``changes`` applied; no .env read."""
    return Settings(_env_file=None, **production_fields(**changes))  # type: ignore[call-arg]
