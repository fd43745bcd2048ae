"""The custom search attributes every payment carries, so operators can find it by query."""

from __future__ import annotations

import hashlib
import hmac

from temporalio.common import SearchAttributeKey

PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PAYMENT_GATEWAY = SearchAttributeKey.for_keyword("PaymentGateway")
MERCHANT_ID = SearchAttributeKey.for_keyword("MerchantId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
AMOUNT_MINOR = SearchAttributeKey.for_int("AmountMinor")
CURRENCY = SearchAttributeKey.for_keyword("Currency")
RISK_SCORE = SearchAttributeKey.for_int("RiskScore")

ALL_KEYS = (
    PAYMENT_STATUS,
    PAYMENT_GATEWAY,
    MERCHANT_ID,
    CUSTOMER_ID,
    AMOUNT_MINOR,
    CURRENCY,
    RISK_SCORE,
)

SEARCH_ATTRIBUTE_NAMES = [key.name for key in ALL_KEYS]

# The names the `temporal` CLI uses for each value type (`--search-attribute Name=Type`).
_CLI_TYPE = {"KEYWORD": "Keyword", "INT": "Int"}


def cli_declarations() -> list[str]:
    """``Name=Type`` pairs for ``temporal server start-dev --search-attribute``."""
    return [
        f"{key.name}={_CLI_TYPE[key.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_')]}"
        for key in ALL_KEYS
    ]


def customer_search_value(customer_id: str, key: str) -> str:
    """What the CustomerId search attribute holds for a customer: a keyed hash, because search
    attributes are stored and indexed in clear. `paytide customer-key ID` prints it."""
    digest = hmac.new(key.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
    return f"ch_{digest[:24]}"
