"""The one typed settings object, read from ``PAYTIDE_*`` variables and an optional ``.env``."""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paytide import merchant_ids
from paytide.codec import KeyRing, parse_keys
from paytide.outbound import TargetPolicy
from paytide.production_rules import (
    DEV_PAYLOAD_KEYS,
    DEV_RECEIPT_FROM,
    DEV_SANDBOX_API_KEY,
    DEV_SANDBOX_WEBHOOK_SECRET,
    DEV_SEARCH_HASH_KEY,
    UnsafeForProduction,
    production_problems,
)
from paytide.routing import DEFAULT_RULES, RoutingRule

ENV_PREFIX = "PAYTIDE_"


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SmtpTls(StrEnum):
    NONE = "none"  # plain SMTP: a local sink or relay only
    STARTTLS = "starttls"
    TLS = "tls"  # implicit TLS (SMTPS, usually port 465)


class TemporalDevDb(StrEnum):
    """Where `paytide dev` keeps its Temporal dev server's state."""

    FILE = "file"
    MEMORY = "memory"


Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every knob paytide has. Each field is the variable ``PAYTIDE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"
    state_dir: Path = Path(".paytide")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "paytide-payments"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_ui_port: Port = 8233
    # `memory` forgets every workflow on restart: for benchmarks that measure the engine itself.
    temporal_dev_db: TemporalDevDb = TemporalDevDb.FILE
    # The worker runs workflow code outside the SDK's sandbox unless this is on: the sandbox costs
    # about a sixth of the worker's CPU per payment, and the tests run every workflow inside it
    # (docs/decisions.md 28).
    workflow_sandbox: bool = False

    # Where operators browse the Temporal Web UI (dashboard links); empty: the local dev UI.
    temporal_ui_url: str = ""

    # Ledger
    database_url: str = ""

    # Observability (docs/observability.md). The worker serves /metrics on its own port
    # (0 turns it off); traces go to an OTLP/HTTP collector only when its URL is set.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    otlp_endpoint: str = ""
    # A payment still open this long after it started counts as stuck on the dashboard.
    dashboard_stuck_after: PositiveSeconds = 1800.0

    # API
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    api_public_url: str = ""
    default_merchant: str = "demo"
    initiate_wait: PositiveSeconds = 3.0
    max_body_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    # Merchant API keys (docs/security.md). A verified key is remembered this long by each API
    # process: the bound on how long a revoked key still works there. 0 turns the cache off.
    api_key_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    # How long a rotated-out key keeps working next to its successor (`merchants keys rotate`).
    api_key_rotation_overlap: Annotated[float, Field(ge=0)] = 24 * 3600.0
    # Per-key token bucket: `rate_limit_per_second` sustained, `rate_limit_burst` at once.
    rate_limit_per_second: Annotated[float, Field(gt=0)] = 100.0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 200
    # HTTP edge of the API server (api/server.py; docs/operations.md, "Behind a reverse proxy"):
    # a connection that has not sent a request's headers within api_header_timeout seconds is
    # closed; a body not received within api_body_timeout seconds of its headers is answered
    # 408 and closed; connections beyond api_max_connections are answered 503 and closed; a
    # request whose headers exceed api_max_header_bytes is answered 400; a connection whose
    # client has not read what the server wrote within api_send_timeout seconds is dropped.
    api_header_timeout: PositiveSeconds = 10.0
    api_body_timeout: PositiveSeconds = 30.0
    api_send_timeout: PositiveSeconds = 30.0
    api_max_connections: Annotated[int, Field(ge=1)] = 1000
    api_max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    # Failed authentication per client address (api/auth_failures.py): `auth_failure_limit`
    # failures at once, coming back at that many per `auth_failure_window` seconds; past them the
    # address gets 429 too_many_auth_failures. 0 turns the limit off (a proxy in front does it).
    auth_failure_limit: Annotated[int, Field(ge=0)] = 20
    auth_failure_window: PositiveSeconds = 60.0

    # Payment workflow
    webhook_timeout: PositiveSeconds = 60.0
    max_webhook_wait: PositiveSeconds = 24 * 3600.0
    max_charge_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    charge_retry_backoff: PositiveSeconds = 2.0
    risk_block_score: Annotated[int, Field(ge=0, le=100)] = 80
    # Fraud review and operator alerts (docs/fraud.md). A score at or above risk_review_score
    # (and below risk_block_score) waits up to review_timeout seconds for an operator.
    risk_review_score: Annotated[int, Field(ge=0, le=100)] = 70
    review_timeout: PositiveSeconds = 24 * 3600.0
    ops_alert_url: str = ""
    ops_alert_secret: SecretStr | None = None
    # Disputes: the merchant is reminded this many seconds before the evidence is due.
    dispute_reminder_before: PositiveSeconds = 2 * 24 * 3600.0
    # Fraud rules (rules-1): each rule's weight, window and threshold; docs/fraud.md explains them.
    # Amounts in whole major units, converted per currency (2 -> 200 EUR cents, 2 JPY).
    risk_large_amount_major: Annotated[int, Field(ge=0)] = 10_000
    risk_large_amount_weight: Annotated[int, Field(ge=0, le=100)] = 20
    risk_daily_window_seconds: PositiveSeconds = 24 * 3600.0
    risk_daily_max_payments: Annotated[int, Field(ge=0)] = 5
    risk_daily_weight: Annotated[int, Field(ge=0, le=100)] = 30
    risk_velocity_window_seconds: PositiveSeconds = 300.0
    risk_velocity_max_payments: Annotated[int, Field(ge=0)] = 5
    risk_velocity_weight: Annotated[int, Field(ge=0, le=100)] = 30
    risk_unusual_amount_factor: Annotated[int, Field(ge=1)] = 3
    risk_unusual_amount_weight: Annotated[int, Field(ge=0, le=100)] = 25
    risk_unknown_device_weight: Annotated[int, Field(ge=0, le=100)] = 15
    risk_location_travel_window_seconds: PositiveSeconds = 3600.0
    risk_location_weight: Annotated[int, Field(ge=0, le=100)] = 20
    risk_card_testing_window_seconds: PositiveSeconds = 600.0
    risk_card_testing_min_attempts: Annotated[int, Field(ge=1)] = 3
    risk_card_testing_small_amount_major: Annotated[int, Field(ge=0)] = 2
    # Comma-separated failure codes that count as declines (Stripe's decline codes, Adyen's
    # refusals as paytide names them, the sandbox's). A trailing * matches a prefix.
    risk_card_testing_decline_codes: str = (
        "card_declined,generic_decline,insufficient_funds,do_not_honor,incorrect_cvc,"
        "invalid_cvc,incorrect_number,invalid_number,expired_card,lost_card,stolen_card,"
        "pickup_card,fraudulent,refused*"
    )
    risk_card_testing_weight: Annotated[int, Field(ge=0, le=100)] = 40
    # Unusual amount, unknown device and new country look at this many latest successes.
    risk_history_max_payments: Annotated[int, Field(ge=1)] = 1000
    gateway_call_timeout: PositiveSeconds = 30.0
    # How long a payment whose final merchant notification failed stays open for a re-drive.
    notification_redrive_window: PositiveSeconds = 7 * 24 * 3600.0
    # Transport retries of one gateway call (same key) before the workflow reconciles.
    gateway_max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    # JSON list of rules: [{"currency": "USD", "gateways": ["stripe", "adyen"]}, ...]; the first
    # rule that matches (merchant, currency, min_amount, max_amount) gives the gateway order.
    routing: list[RoutingRule] = Field(default_factory=lambda: list(DEFAULT_RULES))

    # Sandbox gateway
    # Production safety (issue 16): whether the sandbox gateway exists at all (its adapter, its
    # webhook endpoint, routing to it). Unset: on in development, off in production. Production
    # with it on refuses the public development secrets below (paytide/production_rules.py).
    sandbox_enabled: bool | None = None
    sandbox_host: str = "127.0.0.1"
    sandbox_port: Port = 8100
    sandbox_url: str = ""
    sandbox_api_key: SecretStr = SecretStr(DEV_SANDBOX_API_KEY)
    sandbox_webhook_secret: SecretStr = SecretStr(DEV_SANDBOX_WEBHOOK_SECRET)
    # Comma-separated secrets still accepted on sandbox webhooks while a rotation is under way.
    sandbox_webhook_previous_secrets: SecretStr | None = None
    sandbox_webhook_url: str = ""
    sandbox_webhook_delay: Annotated[float, Field(ge=0)] = 0.2
    sandbox_slow_delay: Annotated[float, Field(ge=0)] = 2.0
    sandbox_flaky_failures: Annotated[int, Field(ge=0)] = 2
    webhook_tolerance: PositiveSeconds = 300.0

    # Stripe (official SDK). No API key: Stripe is not available to routing.
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secrets: SecretStr | None = None  # comma-separated, newest first (rotation)
    stripe_api_base: str = "https://api.stripe.com"

    # Adyen (official SDK). No API key or merchant account: Adyen is not available to routing.
    adyen_api_key: SecretStr | None = None
    adyen_merchant_account: str = ""
    adyen_hmac_keys: SecretStr | None = None  # comma-separated hex keys (rotation)
    adyen_webhook_username: str = ""
    adyen_webhook_password: SecretStr | None = None
    adyen_environment: Literal["test", "live"] = "test"
    adyen_live_url_prefix: str = ""
    adyen_checkout_url: str = ""  # overrides the Checkout base URL (tests, proxies)

    # Merchant notifications
    merchant_callback_url: str = ""
    merchant_callback_secret: SecretStr | None = None
    # Merchants' webhook endpoints (docs/webhooks.md): each (event, endpoint) pair is retried with
    # backoff from webhook_retry_initial up to webhook_retry_max_interval between tries, for
    # webhook_delivery_window seconds in all; then it is a dead letter until re-driven.
    webhook_delivery_window: PositiveSeconds = 24 * 3600.0
    webhook_retry_initial: PositiveSeconds = 10.0
    webhook_retry_max_interval: PositiveSeconds = 3600.0
    webhook_attempt_timeout: PositiveSeconds = 10.0
    # After a secret rotation the old secret keeps signing beside the new one this long.
    webhook_secret_overlap: Annotated[float, Field(ge=0)] = 24 * 3600.0

    # Webhook endpoint targets (docs/webhooks.md, "Which URLs are accepted"). A merchant's URL
    # must resolve to public addresses only, checked at registration and before every delivery.
    # On: loopback addresses pass too (a receiver on the developer's own machine); private,
    # link-local and reserved ranges stay refused. Development only: production refuses it.
    webhook_allow_loopback: bool = False

    # Customer email receipts (payment.succeeded, refund.succeeded) over SMTP. Empty host: none
    # are sent. `paytide dev` points these at its own local sink.
    smtp_host: str = ""
    smtp_port: Port = 25
    smtp_tls: SmtpTls = SmtpTls.NONE
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_timeout: PositiveSeconds = 10.0
    receipt_from: str = DEV_RECEIPT_FROM
    # `paytide dev` runs its SMTP sink here when smtp_host is empty; messages land in
    # <state_dir>/mail/*.eml.
    dev_smtp_port: Port = 2525

    # Payload encryption (docs/operations.md, "Encrypted payloads"). KEY_ID:BASE64_KEY pairs,
    # comma-separated: the first encrypts new payloads, every one decrypts (rotation). Unset:
    # DEV_PAYLOAD_KEYS in development; production refuses to start.
    payload_keys: SecretStr | None = None
    # Key of the keyed hash that stands for a customer id in the CustomerId search attribute:
    # search attributes are indexed in clear, so the customer id itself never goes there.
    search_hash_key: SecretStr = SecretStr(DEV_SEARCH_HASH_KEY)
    # Browser origins (the Temporal Web UI) allowed to call the API's /codec endpoints.
    codec_cors_origins: str = "http://127.0.0.1:8233,http://localhost:8233"
    # When set, /codec/encode and /codec/decode require `Authorization: Bearer <token>`.
    codec_auth_token: SecretStr | None = None

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected HOST:PORT, for example 127.0.0.1:7233")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
        return value

    @field_validator("otlp_endpoint", "temporal_ui_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s]+", value):
            raise ValueError("expected an http(s) URL, for example http://127.0.0.1:4318")
        return value

    @field_validator("default_merchant")
    @classmethod
    def _merchant_id(cls, value: str) -> str:
        problem = merchant_ids.problem_with(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @model_validator(mode="after")
    def _gateways_complete(self) -> Settings:
        # Caught here, so a half-configured gateway stops start-up with a readable message
        # instead of failing when the first payment is routed to it.
        if not self.stripe_api_base.startswith(("https://", "http://")):
            raise ValueError("PAYTIDE_STRIPE_API_BASE must be an http(s) URL")
        for key in self.adyen_hmac_key_list:
            try:
                bytes.fromhex(key)
            except ValueError:
                raise ValueError("PAYTIDE_ADYEN_HMAC_KEYS must be hexadecimal keys") from None
        if self.adyen_hmac_key_list and not (
            self.adyen_webhook_username and self.adyen_webhook_password
        ):
            raise ValueError(
                "PAYTIDE_ADYEN_HMAC_KEYS is set: also set PAYTIDE_ADYEN_WEBHOOK_USERNAME and "
                "PAYTIDE_ADYEN_WEBHOOK_PASSWORD (Adyen's Basic auth for webhooks)"
            )
        if self.adyen_environment == "live" and not self.adyen_live_url_prefix:
            raise ValueError("PAYTIDE_ADYEN_ENVIRONMENT=live needs PAYTIDE_ADYEN_LIVE_URL_PREFIX")
        return self

    @model_validator(mode="after")
    def _alerts_need_secret(self) -> Settings:
        if self.ops_alert_url and self.ops_alert_secret is None:
            raise ValueError(
                "PAYTIDE_OPS_ALERT_URL is set but PAYTIDE_OPS_ALERT_SECRET is not: operator "
                "alerts are always signed"
            )
        return self

    @model_validator(mode="after")
    def _callback_needs_secret(self) -> Settings:
        if self.merchant_callback_url and self.merchant_callback_secret is None:
            raise ValueError(
                "PAYTIDE_MERCHANT_CALLBACK_URL is set but PAYTIDE_MERCHANT_CALLBACK_SECRET is "
                "not: merchant notifications are always signed"
            )
        return self

    @model_validator(mode="after")
    def _payload_keys_usable(self) -> Settings:
        if self.payload_keys is not None:
            parse_keys(self.payload_keys.get_secret_value())  # names the variable itself
        return self

    @model_validator(mode="after")
    def _codec_endpoint(self) -> Settings:
        if self.codec_auth_token is not None and not self.codec_auth_token.get_secret_value():
            raise ValueError("PAYTIDE_CODEC_AUTH_TOKEN is set but empty; unset it or give a token")
        for origin in self.codec_cors_origin_list:
            if origin == "*" or not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    "PAYTIDE_CODEC_CORS_ORIGINS must list origins like "
                    "https://temporal.example.com (scheme and host, no path, no *)"
                )
        return self

    @model_validator(mode="after")
    def _production_ready(self) -> Settings:
        # Last, so it sees values the checks above found well-formed; it reports every problem.
        if self.environment is Environment.PRODUCTION:
            problems = production_problems(self)
            if problems:
                raise UnsafeForProduction(problems)
        return self

    @property
    def webhook_target_policy(self) -> TargetPolicy:
        """What a merchant's webhook URL may point at: https only in production, http too in
        development; loopback only when PAYTIDE_WEBHOOK_ALLOW_LOOPBACK is on."""
        return TargetPolicy(
            allow_http=self.environment is Environment.DEVELOPMENT,
            allow_loopback=self.webhook_allow_loopback,
        )

    @property
    def payload_key_ring(self) -> KeyRing:
        """The parsed keys: those configured, or the development key when none are."""
        return parse_keys((self.payload_keys or SecretStr(DEV_PAYLOAD_KEYS)).get_secret_value())

    @property
    def sandbox_on(self) -> bool:
        """PAYTIDE_SANDBOX_ENABLED, or when unset: on in development, off in production."""
        if self.sandbox_enabled is None:
            return self.environment is Environment.DEVELOPMENT
        return self.sandbox_enabled

    @property
    def gateway_status(self) -> dict[str, str]:
        """Each gateway by routing name, with why it is not available (empty: available)."""
        adyen_missing = [
            variable
            for variable, value in (
                ("PAYTIDE_ADYEN_API_KEY", _split_secret(self.adyen_api_key)),
                ("PAYTIDE_ADYEN_MERCHANT_ACCOUNT", self.adyen_merchant_account),
            )
            if not value
        ]
        return {
            "sandbox": "" if self.sandbox_on else "PAYTIDE_SANDBOX_ENABLED is off",
            "stripe": "" if _split_secret(self.stripe_api_key) else "PAYTIDE_STRIPE_API_KEY unset",
            "adyen": f"{', '.join(adyen_missing)} unset" if adyen_missing else "",
        }

    @property
    def codec_cors_origin_list(self) -> list[str]:
        """Configured origins; in development also the local Web UI on PAYTIDE_TEMPORAL_UI_PORT,
        so a second `paytide dev` on other ports decodes too."""
        origins = [part.strip() for part in self.codec_cors_origins.split(",") if part.strip()]
        if self.environment is Environment.DEVELOPMENT:
            for host in ("127.0.0.1", "localhost"):
                local = f"http://{host}:{self.temporal_ui_port}"
                if local not in origins:
                    origins.append(local)
        return origins

    @property
    def stripe_webhook_secret_list(self) -> list[str]:
        return _split_secret(self.stripe_webhook_secrets)

    @property
    def sandbox_webhook_secret_list(self) -> list[str]:
        """The current secret first, then those a rotation still accepts."""
        previous = _split_secret(self.sandbox_webhook_previous_secrets)
        return [self.sandbox_webhook_secret.get_secret_value(), *previous]

    @property
    def adyen_hmac_key_list(self) -> list[str]:
        return _split_secret(self.adyen_hmac_keys)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'ledger.db'}"

    @property
    def effective_sandbox_url(self) -> str:
        return self.sandbox_url or f"http://{self.sandbox_host}:{self.sandbox_port}"

    @property
    def effective_api_url(self) -> str:
        return self.api_public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def effective_temporal_ui_url(self) -> str:
        return (self.temporal_ui_url or f"http://127.0.0.1:{self.temporal_ui_port}").rstrip("/")

    @property
    def effective_sandbox_webhook_url(self) -> str:
        return self.sandbox_webhook_url or f"{self.effective_api_url}/webhooks/sandbox"

    @property
    def webhook_timeout_delta(self) -> timedelta:
        return timedelta(seconds=self.webhook_timeout)


_SECRET_FIELD = re.compile(r"secret|key|password|token", re.IGNORECASE)


def _split_secret(value: SecretStr | None) -> list[str]:
    if value is None:
        return []
    return [part.strip() for part in value.get_secret_value().split(",") if part.strip()]


class ConfigError(Exception):
    """A setting has a value paytide cannot use; the message names the variable."""


def _describe(error: ValidationError) -> str:
    lines = ["paytide cannot start: some settings are invalid."]
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, UnsafeForProduction):
            lines.append(
                "  PAYTIDE_ENVIRONMENT=production refuses development defaults and missing secrets:"
            )
            lines.extend(f"  {problem}" for problem in cause.problems)
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:
            lines.append(f"  {message}")
            continue
        field = ".".join(str(part) for part in item["loc"])
        variable = f"{ENV_PREFIX}{field.upper()}"
        # Echo what was given, except for credentials.
        shown = "" if _SECRET_FIELD.search(field) else f" (got {item.get('input')!r})"
        lines.append(f"  {variable}: {message}{shown}")
    lines.append("Fix the variable (environment or .env) and start again.")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Read settings now, turning validation failures into a readable `ConfigError`."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
