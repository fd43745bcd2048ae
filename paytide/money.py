"""Money rules: integer minor units and the ISO 4217 exponent of each supported currency."""

from __future__ import annotations

# Exponents from ISO 4217. Currencies not listed are rejected rather than guessed:
# charging 100 JPY as if it were 1.00 JPY is a hundredfold error.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2, "CZK": 2,
    "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2,
    "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2, "NOK": 2,
    "NZD": 2, "OMR": 3, "PLN": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2,
    "TWD": 2, "UGX": 0, "USD": 2, "VND": 0, "XAF": 0, "XOF": 0, "ZAR": 2,
}  # fmt: skip

# Largest amount a single payment may carry, in minor units (Stripe's own ceiling is 8 digits
# for most currencies; we allow more headroom for zero-exponent currencies and stay far below
# what a signed 64-bit column holds).
MAX_AMOUNT_MINOR = 10**12


class UnknownCurrency(ValueError):
    pass


def exponent(currency: str) -> int:
    try:
        places: int = CURRENCY_EXPONENTS[currency]
        return places
    except KeyError:
        raise UnknownCurrency(f"unsupported currency {currency!r}") from None


def major_units_threshold(major: int, currency: str) -> int:
    """Convert a whole number of major units (10,000.00 → 10000) into minor units."""
    scale: int = 10 ** exponent(currency)
    return major * scale


def format_amount(amount_minor: int, currency: str) -> str:
    places = exponent(currency)
    if places == 0:
        return f"{amount_minor} {currency}"
    scale: int = 10**places
    whole, frac = divmod(abs(amount_minor), scale)
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{whole}.{frac:0{places}d} {currency}"
