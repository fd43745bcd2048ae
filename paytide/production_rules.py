"""What production refuses: the public development values, and secrets it cannot run without.

``Settings`` runs every rule of ``PRODUCTION_RULES`` when ``PAYTIDE_ENVIRONMENT=production`` and
refuses to start with every problem found, so one failed start names each variable to fix. A rule
is a function from the settings to the problems it finds; add one by appending it to the list.
The development values live here too, next to the rules that refuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from pydantic import SecretStr

from paytide.codec import KEYS_VARIABLE, parse_keys

if TYPE_CHECKING:
    from paytide.settings import Settings

# Written as plain strings so `paytide dev` works with zero configuration on a fresh clone. All
# of them are public (they are in this file), so production refuses every one.
DEV_SANDBOX_WEBHOOK_SECRET = "whsec_sandbox_local_dev_only"  # noqa: S105 - dev-only default
DEV_SANDBOX_API_KEY = "sk_sandbox_local_dev_only"
# Key of the CustomerId search-attribute hash in development.
DEV_SEARCH_HASH_KEY = "paytide-dev-search-hash-key"
# Payload encryption key used only when PAYTIDE_PAYLOAD_KEYS is unset in development, so a fresh
# clone encrypts exactly as production does.
DEV_PAYLOAD_KEYS = "dev:cGF5dGlkZSBkZXYga2V5OiBuZXZlciBmb3IgbW9uZXk="
DEV_RECEIPT_FROM = "receipts@paytide.localhost"
# Every public value above that could pass for a secret, and the dev payload key on its own.
PUBLIC_SECRETS = frozenset(
    {
        DEV_SANDBOX_WEBHOOK_SECRET,
        DEV_SANDBOX_API_KEY,
        DEV_SEARCH_HASH_KEY,
        DEV_PAYLOAD_KEYS,
        DEV_PAYLOAD_KEYS.partition(":")[2],
    }
)

GENERATE = "generate one with `openssl rand -base64 32`"


@dataclass(frozen=True)
class Problem:
    """One variable production cannot run with: what is wrong with it and what to do."""

    variable: str
    message: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


class UnsafeForProduction(ValueError):
    """Raised by ``Settings`` with every problem at once; ``_describe`` prints one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


Rule: TypeAlias = "Callable[[Settings], Iterator[Problem]]"


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _public(value: str) -> bool:
    """A development value, with or without whitespace around it (a secret read from a file
    keeps its newline, and the key is then the public value plus a guessable character)."""
    return value.strip() in PUBLIC_SECRETS


def payload_keys(settings: Settings) -> Iterator[Problem]:
    if settings.payload_keys is None:
        yield Problem(
            KEYS_VARIABLE,
            "required in production: payloads in Temporal are encrypted with it. Set "
            f"KEY_ID:BASE64_KEY ({GENERATE})",
        )
        return
    dev_key = parse_keys(DEV_PAYLOAD_KEYS).keys["dev"]
    if dev_key in parse_keys(settings.payload_keys.get_secret_value()).keys.values():
        yield Problem(
            KEYS_VARIABLE,
            f"holds the public development key; remove it and use a key of your own ({GENERATE})",
        )


def search_hash_key(settings: Settings) -> Iterator[Problem]:
    if _public(settings.search_hash_key.get_secret_value()):
        yield Problem(
            "PAYTIDE_SEARCH_HASH_KEY",
            f"still the public development value, which lets anyone link customer ids to "
            f"payments; set a secret of your own ({GENERATE})",
        )


def codec_token(settings: Settings) -> Iterator[Problem]:
    if settings.codec_auth_token is None:
        yield Problem(
            "PAYTIDE_CODEC_AUTH_TOKEN",
            "required in production: without it /codec/decode decrypts payment history for "
            f"anyone who reaches the API; set a token ({GENERATE}) and give it to operators' "
            "`temporal --codec-auth 'Bearer …'`",
        )


def sandbox_secrets(settings: Settings) -> Iterator[Problem]:
    if not settings.sandbox_on:
        return
    fix = (
        "the sandbox is enabled here, so set a secret of your own, the same for the API, the "
        f"worker and the sandbox ({GENERATE}), or unset PAYTIDE_SANDBOX_ENABLED"
    )
    if _public(settings.sandbox_api_key.get_secret_value()):
        yield Problem("PAYTIDE_SANDBOX_API_KEY", f"still the public development value; {fix}")
    if _public(settings.sandbox_webhook_secret.get_secret_value()):
        yield Problem(
            "PAYTIDE_SANDBOX_WEBHOOK_SECRET",
            f"still the public development value, with which anyone can sign sandbox events; {fix}",
        )
    if any(_public(previous) for previous in settings.sandbox_webhook_secret_list[1:]):
        yield Problem(
            "PAYTIDE_SANDBOX_WEBHOOK_PREVIOUS_SECRETS",
            "lists a public development value, which still verifies sandbox events; remove it",
        )


def gateway_webhook_secrets(settings: Settings) -> Iterator[Problem]:
    status = settings.gateway_status
    if not status["stripe"] and not settings.stripe_webhook_secret_list:
        yield Problem(
            "PAYTIDE_STRIPE_WEBHOOK_SECRETS",
            "PAYTIDE_STRIPE_API_KEY is set but no webhook signing secret is: Stripe's events "
            "could not be verified, so no payment would ever settle. Set the endpoint's whsec_… "
            "secret from the Stripe dashboard",
        )
    if not status["adyen"]:
        if not settings.adyen_hmac_key_list:
            yield Problem(
                "PAYTIDE_ADYEN_HMAC_KEYS",
                "Adyen is configured but its webhook HMAC key is not set: set the hex key from "
                "the Customer Area's webhook settings",
            )
        if not (settings.adyen_webhook_username and settings.adyen_webhook_password):
            yield Problem(
                "PAYTIDE_ADYEN_WEBHOOK_PASSWORD",
                "Adyen is configured but webhook Basic auth is not: set "
                "PAYTIDE_ADYEN_WEBHOOK_USERNAME and PAYTIDE_ADYEN_WEBHOOK_PASSWORD as in the "
                "Customer Area's webhook settings",
            )


def routing(settings: Settings) -> Iterator[Problem]:
    status = settings.gateway_status
    for index, rule in enumerate(settings.routing):
        for name in dict.fromkeys(rule.gateways):
            if status[name]:
                yield Problem(
                    "PAYTIDE_ROUTING",
                    f"rule {index} routes to {name!r}, which is not available here "
                    f"({status[name]}); route to gateways this deployment has credentials for "
                    '(for example [{"gateways": ["stripe"]}])',
                )


def empty_secrets(settings: Settings) -> Iterator[Problem]:
    """A secret set to the empty string signs and verifies with an empty key."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and not _secret(value).strip():
            yield Problem(f"PAYTIDE_{name.upper()}", f"set but empty; unset it or {GENERATE}")


# Secrets whose development value a rule above judges (the sandbox's only where it is on).
_JUDGED_ABOVE = frozenset(
    {
        "payload_keys",
        "search_hash_key",
        "sandbox_api_key",
        "sandbox_webhook_secret",
        "sandbox_webhook_previous_secrets",
    }
)


def public_secrets(settings: Settings) -> Iterator[Problem]:
    """A development value pasted into any other secret (a gateway's webhook secret, the codec
    token, a callback secret): anyone who read this file can sign or authenticate with it."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name in _JUDGED_ABOVE or not isinstance(value, SecretStr):
            continue
        if any(_public(part) for part in _secret(value).split(",")):
            yield Problem(
                f"PAYTIDE_{name.upper()}",
                f"holds a public development value of paytide; set a secret of your own "
                f"({GENERATE})",
            )


def mail(settings: Settings) -> Iterator[Problem]:
    if settings.smtp_host and settings.receipt_from == DEV_RECEIPT_FROM:
        yield Problem(
            "PAYTIDE_RECEIPT_FROM",
            f"receipts would go out from the development address {DEV_RECEIPT_FROM}; set "
            "your own sender address",
        )
    if settings.smtp_password is not None and settings.smtp_tls == "none":
        yield Problem(
            "PAYTIDE_SMTP_TLS",
            "none would send PAYTIDE_SMTP_PASSWORD in clear; set starttls or tls",
        )


def webhook_targets(settings: Settings) -> Iterator[Problem]:
    if settings.webhook_allow_loopback:
        yield Problem(
            "PAYTIDE_WEBHOOK_ALLOW_LOOPBACK",
            "development only: in production it would let a merchant's webhook endpoint reach "
            "services on the worker's own machine; unset it",
        )


PRODUCTION_RULES: list[Rule] = [
    payload_keys,
    search_hash_key,
    codec_token,
    sandbox_secrets,
    gateway_webhook_secrets,
    routing,
    empty_secrets,
    public_secrets,
    mail,
    webhook_targets,
]


def production_problems(settings: Settings) -> list[Problem]:
    """Every problem every rule finds, in the order of ``PRODUCTION_RULES``."""
    return [problem for rule in PRODUCTION_RULES for problem in rule(settings)]
