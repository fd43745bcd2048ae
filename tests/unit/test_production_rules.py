"""PAYTIDE_ENVIRONMENT=production refuses every development default and missing secret at once,
naming each variable; the sandbox gateway exists in production only when enabled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from paytide.production_rules import (
    DEV_PAYLOAD_KEYS,
    DEV_SANDBOX_API_KEY,
    DEV_SANDBOX_WEBHOOK_SECRET,
    DEV_SEARCH_HASH_KEY,
    PRODUCTION_RULES,
)
from paytide.settings import ConfigError, Environment, Settings, load_settings
from tests.support.production import (
    PAYLOAD_KEY,
    PRODUCTION_ENV,
    production_fields,
    production_settings,
)

pytestmark = pytest.mark.unit

FRESH = "a-fresh-secret-of-this-deployment"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PAYTIDE_* variables and a working directory with no .env file."""
    for name in list(os.environ):
        if name.startswith("PAYTIDE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def refusal(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> str:
    """load_settings' ConfigError for the correct production config with ``changes`` (None
    unsets a variable)."""
    for variable, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(variable, value)
    for name, value in changes.items():
        variable = f"PAYTIDE_{name.upper()}"
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value if isinstance(value, str) else json.dumps(value))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_production_with_only_the_two_keys_names_every_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16's config (payload and search-hash keys only) is refused, naming the codec token
    and the sandbox-only routing in one message, not one variable per start."""
    monkeypatch.setenv("PAYTIDE_ENVIRONMENT", "production")
    monkeypatch.setenv("PAYTIDE_PAYLOAD_KEYS", PRODUCTION_ENV["PAYTIDE_PAYLOAD_KEYS"])
    monkeypatch.setenv("PAYTIDE_SEARCH_HASH_KEY", FRESH)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("paytide cannot start")
    assert "  PAYTIDE_CODEC_AUTH_TOKEN: required in production" in message
    assert "  PAYTIDE_ROUTING: rule 0 routes to 'sandbox'" in message
    assert "PAYTIDE_SANDBOX_ENABLED is off" in message
    assert message.endswith("Fix the variable (environment or .env) and start again.")


def test_production_with_nothing_set_names_each_variable_on_its_own_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every problem of a bare production config is one line starting with its variable."""
    monkeypatch.setenv("PAYTIDE_ENVIRONMENT", "production")
    monkeypatch.setenv("PAYTIDE_SANDBOX_ENABLED", "true")
    monkeypatch.setenv("PAYTIDE_STRIPE_API_KEY", "sk_test_x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    named = {
        line.split(":", 1)[0].strip()
        for line in str(caught.value).splitlines()
        if line.startswith("  PAYTIDE_") and not line.startswith("  PAYTIDE_ENVIRONMENT")
    }
    assert named == {
        "PAYTIDE_PAYLOAD_KEYS",
        "PAYTIDE_SEARCH_HASH_KEY",
        "PAYTIDE_CODEC_AUTH_TOKEN",
        "PAYTIDE_SANDBOX_API_KEY",
        "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
        "PAYTIDE_STRIPE_WEBHOOK_SECRETS",
    }


def test_a_correct_production_config_starts_without_the_sandbox() -> None:
    """The base production config loads; the sandbox is off and not available to routing."""
    settings = production_settings()
    assert settings.environment is Environment.PRODUCTION
    assert not settings.sandbox_on
    assert settings.gateway_status == {
        "sandbox": "PAYTIDE_SANDBOX_ENABLED is off",
        "stripe": "",
        "adyen": "PAYTIDE_ADYEN_API_KEY, PAYTIDE_ADYEN_MERCHANT_ACCOUNT unset",
    }


def test_sandbox_is_on_in_development_and_off_in_production_unless_set() -> None:
    """PAYTIDE_SANDBOX_ENABLED unset follows the environment; set, it wins in either."""
    assert Settings(_env_file=None).sandbox_on  # type: ignore[call-arg]
    assert not Settings(_env_file=None, sandbox_enabled=False).sandbox_on  # type: ignore[call-arg]
    enabled = production_settings(
        sandbox_enabled=True, sandbox_api_key=FRESH, sandbox_webhook_secret=FRESH + "-webhook"
    )
    assert enabled.sandbox_on
    assert enabled.gateway_status["sandbox"] == ""


@pytest.mark.parametrize(
    ("changes", "variable", "says"),
    [
        ({"payload_keys": None}, "PAYTIDE_PAYLOAD_KEYS", "required in production"),
        (
            {"payload_keys": f"p1:{PAYLOAD_KEY},{DEV_PAYLOAD_KEYS}"},
            "PAYTIDE_PAYLOAD_KEYS",
            "public development key",
        ),
        ({"search_hash_key": DEV_SEARCH_HASH_KEY}, "PAYTIDE_SEARCH_HASH_KEY", "development"),
        ({"codec_auth_token": None}, "PAYTIDE_CODEC_AUTH_TOKEN", "required in production"),
        (
            {"sandbox_enabled": True, "sandbox_webhook_secret": FRESH},
            "PAYTIDE_SANDBOX_API_KEY",
            "public development value",
        ),
        (
            {"sandbox_enabled": True, "sandbox_api_key": FRESH},
            "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
            "anyone can sign sandbox events",
        ),
        (
            {
                "sandbox_enabled": True,
                "sandbox_api_key": FRESH,
                "sandbox_webhook_secret": FRESH + "-webhook",
                "sandbox_webhook_previous_secrets": DEV_SANDBOX_WEBHOOK_SECRET,
            },
            "PAYTIDE_SANDBOX_WEBHOOK_PREVIOUS_SECRETS",
            "public development value",
        ),
        (
            {"sandbox_enabled": True, "sandbox_webhook_secret": DEV_SANDBOX_API_KEY},
            "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
            "public development value",
        ),
        ({"stripe_webhook_secrets": None}, "PAYTIDE_STRIPE_WEBHOOK_SECRETS", "no webhook"),
        (
            {"adyen_api_key": "adyen-key", "adyen_merchant_account": "Acme"},
            "PAYTIDE_ADYEN_HMAC_KEYS",
            "Adyen is configured",
        ),
        (
            {"adyen_api_key": "adyen-key", "adyen_merchant_account": "Acme"},
            "PAYTIDE_ADYEN_WEBHOOK_PASSWORD",
            "webhook Basic auth",
        ),
        (
            {"routing": [{"currency": "EUR", "gateways": ["adyen"]}, {"gateways": ["stripe"]}]},
            "PAYTIDE_ROUTING",
            "rule 0 routes to 'adyen', which is not available here",
        ),
        ({"routing": [{"gateways": ["sandbox"]}]}, "PAYTIDE_ROUTING", "SANDBOX_ENABLED is off"),
        (
            {
                "merchant_callback_url": "https://m.example.com/hook",
                "merchant_callback_secret": " ",
            },
            "PAYTIDE_MERCHANT_CALLBACK_SECRET",
            "set but empty",
        ),
        ({"smtp_host": "mail.example.com"}, "PAYTIDE_RECEIPT_FROM", "development address"),
        (
            {
                "smtp_host": "mail.example.com",
                "receipt_from": "receipts@example.com",
                "smtp_password": "pw",
            },
            "PAYTIDE_SMTP_TLS",
            "in clear",
        ),
    ],
)
def test_each_production_rule_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], variable: str, says: str
) -> None:
    """One unsafe value on an otherwise correct production config is refused, naming it."""
    message = refusal(monkeypatch, **changes)
    line = next((ln for ln in message.splitlines() if ln.startswith(f"  {variable}: ")), "")
    assert says in line, message


def test_development_keeps_every_default_the_rules_refuse() -> None:
    """The same values are fine in development: a fresh clone needs no configuration."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, sandbox_webhook_previous_secrets=DEV_SANDBOX_WEBHOOK_SECRET
    )
    assert settings.sandbox_api_key.get_secret_value() == DEV_SANDBOX_API_KEY
    assert settings.sandbox_on


def test_the_refusal_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message names variables only: no secret of the refused config appears in it."""
    message = refusal(
        monkeypatch,
        sandbox_enabled=True,
        sandbox_api_key=FRESH,
        stripe_webhook_secrets=None,
        codec_auth_token=None,
    )
    for secret in (FRESH, PAYLOAD_KEY, DEV_SANDBOX_WEBHOOK_SECRET, "sk_test_production_tests"):
        assert secret not in message


def test_rules_are_one_list() -> None:
    """Every rule is in PRODUCTION_RULES, so a new one is a function appended there."""
    assert len(PRODUCTION_RULES) == len(set(PRODUCTION_RULES)) >= 8
    assert production_fields()["environment"] == "production"


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        # A trailing newline (a secret read from a file) or spaces keep the key guessable.
        (
            {
                "sandbox_enabled": True,
                "sandbox_api_key": FRESH,
                "sandbox_webhook_secret": DEV_SANDBOX_WEBHOOK_SECRET + "\n",
            },
            "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
        ),
        (
            {
                "sandbox_enabled": True,
                "sandbox_api_key": f" {DEV_SANDBOX_API_KEY} ",
                "sandbox_webhook_secret": FRESH,
            },
            "PAYTIDE_SANDBOX_API_KEY",
        ),
        ({"search_hash_key": DEV_SEARCH_HASH_KEY + "\n"}, "PAYTIDE_SEARCH_HASH_KEY"),
        # A development value pasted into a variable that has no development default.
        (
            {"stripe_webhook_secrets": f"whsec_production_tests,{DEV_SANDBOX_WEBHOOK_SECRET}"},
            "PAYTIDE_STRIPE_WEBHOOK_SECRETS",
        ),
        ({"codec_auth_token": DEV_SANDBOX_API_KEY}, "PAYTIDE_CODEC_AUTH_TOKEN"),
        ({"search_hash_key": DEV_SANDBOX_WEBHOOK_SECRET}, "PAYTIDE_SEARCH_HASH_KEY"),
        (
            {
                "merchant_callback_url": "https://m.example.com/hook",
                "merchant_callback_secret": DEV_SANDBOX_WEBHOOK_SECRET,
            },
            "PAYTIDE_MERCHANT_CALLBACK_SECRET",
        ),
        ({"codec_auth_token": DEV_PAYLOAD_KEYS.partition(":")[2]}, "PAYTIDE_CODEC_AUTH_TOKEN"),
    ],
    ids=[
        "sandbox-secret-newline",
        "sandbox-key-spaces",
        "search-key-newline",
        "stripe-secret-is-sandbox-secret",
        "codec-token-is-sandbox-key",
        "search-key-is-sandbox-secret",
        "callback-secret-is-sandbox-secret",
        "codec-token-is-payload-key",
    ],
)
def test_a_public_value_padded_or_in_another_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], variable: str
) -> None:
    """A development value with whitespace around it, or in any other secret variable, is as
    public as the default itself: production refuses it, naming the variable."""
    message = refusal(monkeypatch, **changes)
    assert any(line.startswith(f"  {variable}: ") for line in message.splitlines()), message


@pytest.mark.parametrize("spelling", ["PRODUCTION", "Production", "prod"])
def test_a_misspelt_environment_stops_start_up_instead_of_meaning_development(
    monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    """PAYTIDE_ENVIRONMENT other than exactly `development` or `production` is refused, naming
    it: a production config with a case slip never runs with the development defaults."""
    message = refusal(monkeypatch, environment=spelling)
    assert "PAYTIDE_ENVIRONMENT: Input should be 'development' or 'production'" in message
