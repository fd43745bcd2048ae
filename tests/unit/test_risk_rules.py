"""The fraud rules as pure functions of what the ledger said: thresholds, evidence, the cap."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from activities.risk import (
    RiskRules,
    card_testing,
    evaluate,
    large_amount,
    location_anomaly,
    missing_signals,
    parse_codes,
    score,
    unknown_device,
    unusual_amount,
)
from ledger.risk import CustomerRecent, MethodRecent, Signals, SucceededHistory
from paytide.settings import Settings
from workflows.contract import PaymentRequest, RiskContext, RiskFactor

pytestmark = pytest.mark.unit

RULES = RiskRules()
NO_HISTORY = SucceededHistory(
    payments=0,
    same_currency=0,
    same_currency_total_minor=0,
    with_device=0,
    device_seen=False,
    with_country=0,
    countries=0,
    country_seen=False,
)
QUIET = CustomerRecent(daily=0, velocity=0, small=0, declines=0, elsewhere=0, other_country=None)
UNUSED_CARD = MethodRecent(payments=0, small=0, declines=0)


def request(
    amount: int = 2500, currency: str = "EUR", device: str | None = "d", country: str | None = "FR"
) -> PaymentRequest:
    return PaymentRequest(
        payment_id="pay_1",
        merchant_id="m",
        idempotency_key="k",
        fingerprint="f",
        amount_minor=amount,
        currency=currency,
        customer_id="cus_1",
        payment_method="pm_1",
        order_id="o",
        risk=RiskContext(device_id=device, country=country),
    )


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PAYTIDE_* variables and no .env file."""
    for name in list(os.environ):
        if name.startswith("PAYTIDE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_environment")
def test_rule_defaults_are_the_settings_defaults() -> None:
    """RiskRules() and the rules built from default settings are the same rules."""
    assert RiskRules.from_settings(Settings()) == RiskRules()


@pytest.mark.usefixtures("clean_environment")
def test_rules_read_paytide_risk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """PAYTIDE_RISK_* variables set weights, windows and the decline codes."""
    monkeypatch.setenv("PAYTIDE_RISK_VELOCITY_WEIGHT", "12")
    monkeypatch.setenv("PAYTIDE_RISK_CARD_TESTING_WINDOW_SECONDS", "120")
    monkeypatch.setenv("PAYTIDE_RISK_CARD_TESTING_DECLINE_CODES", " card_declined , refused* ,")
    rules = RiskRules.from_settings(Settings())
    assert rules.velocity_weight == 12
    assert rules.card_testing_window_seconds == 120
    assert rules.card_testing_decline_codes == frozenset({"card_declined", "refused*"})


def test_parse_codes_drops_blanks_and_spaces() -> None:
    """The comma-separated form tolerates spaces and empty entries."""
    assert parse_codes(" a, b,,c* ") == frozenset({"a", "b", "c*"})
    assert parse_codes("") == frozenset()


@pytest.mark.parametrize(
    ("currency", "threshold"), [("EUR", 1_000_000), ("JPY", 10_000), ("KWD", 10_000_000)]
)
def test_large_amount_threshold_is_in_major_units(currency: str, threshold: int) -> None:
    """10,000 major units is 1,000,000 cents, 10,000 yen, 10,000,000 fils."""
    assert large_amount(RULES, request(threshold, currency)) is None
    fired = large_amount(RULES, request(threshold + 1, currency))
    assert fired is not None
    assert fired.evidence["threshold_minor"] == threshold


def test_unusual_amount_compares_without_rounding_the_average() -> None:
    """Average 333.67 (1001 over 3): 1001 is exactly 3x and does not fire, 1002 does."""
    history = replace(NO_HISTORY, payments=3, same_currency=3, same_currency_total_minor=1001)
    assert unusual_amount(RULES, request(1001), history) is None
    fired = unusual_amount(RULES, request(1002), history)
    assert fired is not None
    assert fired.evidence["average_minor"] == 333


def test_unknown_device_treats_an_empty_device_as_missing() -> None:
    """An empty device id is no signal: the rule cannot fire and missing_signals names it."""
    history = replace(NO_HISTORY, payments=2, with_device=2)
    assert unknown_device(RULES, request(device=""), history) is None
    missing = missing_signals(request(device=""))
    assert missing is not None
    assert missing.evidence["missing"] == "device_id"


def test_location_anomaly_needs_the_payment_country() -> None:
    """Without a country, neither a new country nor a journey can be judged."""
    history = replace(NO_HISTORY, payments=2, with_country=2, countries=1)
    recent = replace(QUIET, elsewhere=3, other_country="BR")
    assert location_anomaly(RULES, request(country=None), history, recent) is None
    fired = location_anomaly(RULES, request(country="DE"), history, recent)
    assert fired is not None
    assert fired.evidence["reason"] == "new_country,impossible_travel"


@pytest.mark.parametrize("field", ["small", "declines"])
@pytest.mark.parametrize("scope", ["customer", "method"])
def test_card_testing_fires_at_the_minimum_attempts_in_any_count(field: str, scope: str) -> None:
    """Small amounts or declines, by card or by customer: 2 do not fire, 3 do."""

    def counts(value: int) -> tuple[CustomerRecent, MethodRecent]:
        small, declines = (value, 0) if field == "small" else (0, value)
        if scope == "customer":
            return replace(QUIET, small=small, declines=declines), UNUSED_CARD
        return QUIET, replace(UNUSED_CARD, small=small, declines=declines)

    assert card_testing(RULES, request(), *counts(2)) is None
    fired = card_testing(RULES, request(), *counts(3))
    assert fired is not None
    assert fired.weight == 40


def test_score_is_the_capped_sum_of_weights() -> None:
    """Weights add up and stop at 100."""
    factors = [RiskFactor(name=str(n), weight=40) for n in range(3)]
    assert score(factors[:2]) == 80
    assert score(factors) == 100
    assert score([]) == 0


def test_a_quiet_ledger_and_full_signals_score_zero() -> None:
    """No history, no recent activity, device and country given: no factor at all."""
    signals = Signals(history=NO_HISTORY, customer=QUIET, method=UNUSED_CARD)
    assert evaluate(RULES, request(), signals) == []
