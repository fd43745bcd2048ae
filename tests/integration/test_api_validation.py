"""The HTTP edge refuses bad requests with one error shape, before Temporal or the ledger is used.

The real app runs under uvicorn with its lifespan; Temporal points at a closed port, so any
request that got past validation would fail loudly instead of passing by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from api.app import create_app
from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from ledger.models import Payment, WebhookEvent
from paytide.api_keys import Role
from paytide.settings import Settings
from tests.integration.stack import bearer, issue_api_key
from tests.support.serve import serve_api

pytestmark = pytest.mark.integration

UNREACHABLE_TEMPORAL = "127.0.0.1:1"
ERROR_KEYS = {"code", "message", "details"}


@pytest.fixture(scope="module")
def api_ledger_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ledger of this module's own, so "nothing was written" can be checked exactly."""
    path: Path = tmp_path_factory.mktemp("api_ledger") / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
async def api(api_ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=api_ledger_url, temporal_address=UNREACHABLE_TEMPORAL)
    engine = create_ledger_engine(api_ledger_url)
    try:
        api_key = issue_api_key(engine, settings.default_merchant)
    finally:
        engine.dispose()
    async with (
        serve_api(create_app(settings), settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=15.0, headers=bearer(api_key)) as client,
    ):
        yield client


def valid_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 4200,
        "currency": "USD",
        "customer_id": "cus_validation",
        "payment_method": "pm_sandbox_ok",
        "order_id": "order_validation",
    }
    body.update(changes)
    return body


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the standard error with this status and code; return its error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def field_errors(response: httpx.Response) -> list[dict[str, str]]:
    """The details of a 422 validation failure, each checked to be {field, code, message}."""
    details = error_of(response, 422, "validation_failed")["details"]
    assert isinstance(details, list) and details
    for item in details:
        assert set(item) == {"field", "code", "message"}, item
    return details


def count(url: str, model: type[Payment] | type[WebhookEvent]) -> int:
    engine = create_ledger_engine(url)
    try:
        with Session(engine) as session:
            return session.exec(select(func.count()).select_from(model)).one()
    finally:
        engine.dispose()


# ---- POST /payments: body -----------------------------------------------------------------


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    """A body that is not JSON is refused with malformed_json and no details."""
    response = await api.post(
        "/payments", content=b'{"amount": 42', headers={"content-type": "application/json"}
    )
    assert error_of(response, 400, "malformed_json")["details"] is None


async def test_empty_body_is_400(api: httpx.AsyncClient) -> None:
    """An empty body is malformed JSON, not a crash."""
    response = await api.post("/payments", content=b"")
    error_of(response, 400, "malformed_json")


async def test_body_over_64_kib_is_413(api: httpx.AsyncClient) -> None:
    """A body larger than 64 KiB is refused before it is parsed."""
    body = valid_body(description="x" * (64 * 1024))
    response = await api.post("/payments", json=body)
    error_of(response, 413, "body_too_large")


async def test_streamed_body_over_64_kib_is_413(api: httpx.AsyncClient) -> None:
    """A chunked body with no Content-Length is cut off once it passes 64 KiB."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b" " * 1024

    response = await api.post(
        "/payments", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    error_of(response, 413, "body_too_large")


async def test_json_that_is_not_an_object_is_422(api: httpx.AsyncClient) -> None:
    """A JSON array where an object belongs is a validation failure."""
    response = await api.post("/payments", json=[valid_body()])
    error_of(response, 422, "validation_failed")


async def test_unknown_field_is_named(api: httpx.AsyncClient) -> None:
    """An extra field is refused as unknown_field, naming the field."""
    response = await api.post("/payments", json=valid_body(colour="blue"))
    (item,) = field_errors(response)
    assert item["field"] == "colour"
    assert item["code"] == "unknown_field"
    assert item["message"]


async def test_missing_field_is_named(api: httpx.AsyncClient) -> None:
    """A missing required field is refused as required, naming the field."""
    body = valid_body()
    del body["customer_id"]
    (item,) = field_errors(await api.post("/payments", json=body))
    assert (item["field"], item["code"]) == ("customer_id", "required")


@pytest.mark.parametrize("amount", [0, -1, 10.5, "100", True, None, 10**12 + 1])
async def test_amount_must_be_a_positive_integer(api: httpx.AsyncClient, amount: object) -> None:
    """Zero, negatives, fractions, strings, booleans and absurd amounts are refused on amount."""
    (item,) = field_errors(await api.post("/payments", json=valid_body(amount=amount)))
    assert item["field"] == "amount"


@pytest.mark.parametrize("currency", ["usd", "XXX", "US", ""])
async def test_currency_must_be_supported(api: httpx.AsyncClient, currency: str) -> None:
    """Lower-case and unknown currency codes are refused as unsupported_currency."""
    (item,) = field_errors(await api.post("/payments", json=valid_body(currency=currency)))
    assert (item["field"], item["code"]) == ("currency", "unsupported_currency")


@pytest.mark.parametrize("card", ["4242 4242 4242 4242", "4242424242424242", "4242-4242-4242-4242"])
async def test_card_number_is_refused(api: httpx.AsyncClient, card: str) -> None:
    """A raw card number as payment_method is refused, and the response does not echo it."""
    response = await api.post("/payments", json=valid_body(payment_method=card))
    (item,) = field_errors(response)
    assert (item["field"], item["code"]) == ("payment_method", "card_number_not_allowed")
    assert card not in response.text


async def test_metadata_with_41_keys_is_refused(api: httpx.AsyncClient) -> None:
    """Metadata holds at most 40 keys (Stripe's 50 minus room for paytide's own ids)."""
    metadata = {f"k{i}": "v" for i in range(41)}
    (item,) = field_errors(await api.post("/payments", json=valid_body(metadata=metadata)))
    assert (item["field"], item["code"]) == ("metadata", "too_many_keys")


async def test_metadata_value_must_be_a_string(api: httpx.AsyncClient) -> None:
    """A metadata value that is not a string is refused on its own key."""
    (item,) = field_errors(await api.post("/payments", json=valid_body(metadata={"n": 1})))
    assert (item["field"], item["code"]) == ("metadata.n", "invalid_type")


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({"": "v"}, "invalid_key"),
        ({"k" * 41: "v"}, "invalid_key"),
        ({"k": "v" * 501}, "value_too_long"),
        ({"k": {"nested": "v"}}, "invalid_type"),
    ],
)
async def test_metadata_keys_and_values_are_bounded(
    api: httpx.AsyncClient, metadata: dict[str, object], code: str
) -> None:
    """Metadata keys are 1-40 characters and values strings of at most 500: bounded storage."""
    (item,) = field_errors(await api.post("/payments", json=valid_body(metadata=metadata)))
    assert item["code"] == code
    assert item["field"].startswith("metadata")


async def test_unknown_field_inside_an_object_is_named(api: httpx.AsyncClient) -> None:
    """Strictness reaches nested objects: an extra field in location is refused by its path."""
    body = valid_body(location={"country": "DE", "colour": "blue"})
    (item,) = field_errors(await api.post("/payments", json=body))
    assert (item["field"], item["code"]) == ("location.colour", "unknown_field")


@pytest.mark.parametrize("key", ["has space", "k" * 300, "tab\tkey"])
async def test_bad_idempotency_key_is_400(api: httpx.AsyncClient, key: str) -> None:
    """An Idempotency-Key with a space or control character, or over 255 characters, is refused."""
    response = await api.post("/payments", json=valid_body(), headers={"Idempotency-Key": key})
    error_of(response, 400, "invalid_idempotency_key")


async def test_refused_requests_write_nothing(api: httpx.AsyncClient, api_ledger_url: str) -> None:
    """After a burst of refused creates, the ledger holds no payment."""
    bad_requests: list[dict[str, Any]] = [
        {"content": b"not json"},
        {"json": valid_body(amount=0)},
        {"json": valid_body(currency="usd")},
        {"json": valid_body(payment_method="4242424242424242")},
        {"json": valid_body(colour="blue")},
        {"json": valid_body(), "headers": {"Idempotency-Key": "has space"}},
    ]
    for request in bad_requests:
        response = await api.post("/payments", **request)
        assert 400 <= response.status_code < 500, response.text
    assert count(api_ledger_url, Payment) == 0


# ---- reading payments ---------------------------------------------------------------------


async def test_unknown_payment_is_404(api: httpx.AsyncClient) -> None:
    """Reading a payment that does not exist is 404 payment_not_found."""
    error_of(await api.get("/payments/pay_nope"), 404, "payment_not_found")


async def test_cancel_unknown_payment_is_404(api: httpx.AsyncClient) -> None:
    """Cancelling a payment that does not exist is 404 payment_not_found."""
    error_of(await api.post("/payments/pay_nope/cancel"), 404, "payment_not_found")


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=ten", "bogus=1", "status=paid", "created_after=yesterday"],
)
async def test_bad_list_query_is_400(api: httpx.AsyncClient, query: str) -> None:
    """Out-of-range limits, unknown parameters and unparseable filters are invalid_query."""
    error_of(await api.get(f"/payments?{query}"), 400, "invalid_query")


async def test_bad_cursor_is_400(api: httpx.AsyncClient) -> None:
    """A cursor the API did not issue is invalid_cursor."""
    error_of(await api.get("/payments?cursor=%%%"), 400, "invalid_cursor")


async def test_empty_list(api: httpx.AsyncClient) -> None:
    """Listing an empty ledger is an empty page with no next cursor."""
    response = await api.get("/payments?limit=5")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "next_cursor": None}


async def test_unknown_route_is_404_in_the_error_shape(api: httpx.AsyncClient) -> None:
    """A path no route serves answers 404 in the standard error shape."""
    error_of(await api.get("/nowhere"), 404, "not_found")


async def test_wrong_method_is_405_in_the_error_shape(api: httpx.AsyncClient) -> None:
    """A known path with the wrong method answers 405 in the standard error shape."""
    error_of(await api.delete("/payments"), 405, "method_not_allowed")


# ---- webhooks -----------------------------------------------------------------------------


async def test_unsigned_webhook_is_400_and_not_recorded(
    api: httpx.AsyncClient, api_ledger_url: str
) -> None:
    """A webhook without a signature is refused before anything is stored."""
    response = await api.post(
        "/webhooks/sandbox", json={"id": "evt_unsigned", "type": "charge.succeeded"}
    )
    error_of(response, 400, "missing_signature")
    assert count(api_ledger_url, WebhookEvent) == 0


async def test_badly_signed_webhook_is_400_and_not_recorded(
    api: httpx.AsyncClient, api_ledger_url: str
) -> None:
    """A webhook whose signature does not match is refused before anything is stored."""
    response = await api.post(
        "/webhooks/sandbox",
        content=b'{"id": "evt_forged", "type": "charge.succeeded"}',
        headers={"Sandbox-Signature": "t=1700000000,v1=" + "0" * 64},
    )
    error_of(response, 400, "bad_signature")
    assert count(api_ledger_url, WebhookEvent) == 0


async def test_webhook_for_unknown_gateway_is_404(api: httpx.AsyncClient) -> None:
    """A webhook path naming no configured gateway is 404 unknown_gateway."""
    error_of(await api.post("/webhooks/nope", content=b"{}"), 404, "unknown_gateway")


# ---- health ---------------------------------------------------------------------------------


async def test_healthz_is_200(api: httpx.AsyncClient) -> None:
    """The liveness probe answers while Temporal is unreachable."""
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_part(api: httpx.AsyncClient, api_ledger_url: str) -> None:
    """With Temporal unreachable, readiness is 503: {"ready": false} for anyone, and for an
    operator Temporal not ready, the database ready."""
    anonymous = await api.get("/readyz", headers={"Authorization": ""})
    assert anonymous.status_code == 503, anonymous.text
    assert anonymous.json() == {"ready": False}
    engine = create_ledger_engine(api_ledger_url)
    try:
        operator_key = issue_api_key(engine, "operator", Role.OPERATOR)
    finally:
        engine.dispose()
    response = await api.get("/readyz", headers=bearer(operator_key))
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["ready"] is False
    parts = body["parts"]
    assert parts["temporal"]["ready"] is False
    assert parts["temporal"]["detail"]
    assert parts["database"]["ready"] is True
    assert parts["database"]["detail"] == "reachable (sqlite)"
