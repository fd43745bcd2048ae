"""Money rules: ISO 4217 exponents from one table, unknown currencies refused, amounts formatted."""

from __future__ import annotations

import pytest

from paytide.money import (
    CURRENCY_EXPONENTS,
    UnknownCurrency,
    exponent,
    format_amount,
    major_units_threshold,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("currency", "places"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3)]
)
def test_exponent_follows_iso_4217(currency: str, places: int) -> None:
    """Each currency has the number of minor-unit digits ISO 4217 gives it."""
    assert exponent(currency) == places


@pytest.mark.parametrize("currency", ["XXX", "usd", "", "US"])
def test_unknown_currency_is_refused(currency: str) -> None:
    """A currency outside the table (or in lower case) raises rather than guessing an exponent."""
    with pytest.raises(UnknownCurrency, match="unsupported currency"):
        exponent(currency)


def test_unknown_currency_is_a_value_error() -> None:
    """UnknownCurrency is a ValueError, so validators turn it into a field error."""
    assert issubclass(UnknownCurrency, ValueError)


def test_table_holds_upper_case_codes_with_known_exponents() -> None:
    """Every code in the table is three upper-case letters with exponent 0, 2 or 3."""
    for code, places in CURRENCY_EXPONENTS.items():
        assert len(code) == 3 and code.isalpha() and code.isupper(), code
        assert places in {0, 2, 3}, code


@pytest.mark.parametrize(
    ("currency", "minor"), [("JPY", 10_000), ("USD", 1_000_000), ("KWD", 10_000_000)]
)
def test_major_units_threshold_scales_by_the_exponent(currency: str, minor: int) -> None:
    """10,000 major units is 10,000 yen, 1,000,000 cents, 10,000,000 fils."""
    assert major_units_threshold(10_000, currency) == minor


def test_major_units_threshold_refuses_unknown_currency() -> None:
    """A threshold in an unknown currency raises instead of assuming two decimals."""
    with pytest.raises(UnknownCurrency):
        major_units_threshold(10_000, "XXX")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (4200, "USD", "42.00 USD"),
        (5, "EUR", "0.05 EUR"),
        (0, "USD", "0.00 USD"),
        (-1050, "USD", "-10.50 USD"),
        (-5, "USD", "-0.05 USD"),
        (1500, "JPY", "1500 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (7, "KWD", "0.007 KWD"),
    ],
)
def test_format_amount(amount: int, currency: str, text: str) -> None:
    """Minor units print with the currency's own number of decimals and the sign kept."""
    assert format_amount(amount, currency) == text


def test_format_amount_refuses_unknown_currency() -> None:
    """Formatting an amount in an unknown currency raises."""
    with pytest.raises(UnknownCurrency):
        format_amount(100, "XXX")
