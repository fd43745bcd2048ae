"""Hostile JSON bodies (a 5,000-digit integer, 100,000 nested arrays, an unpaired surrogate) are
refused with 400 and the usual error object on every endpoint that parses JSON, and change nothing.

The real app runs under uvicorn with its lifespan; Temporal points at a closed port, so a body
that got past parsing would fail loudly instead of passing by accident.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from api.app import create_app
from gateways import signing
from gateways.sandbox import SIGNATURE_HEADER
from ledger.engine import create_ledger_engine, session_factory
from ledger.migrate import upgrade
from ledger.models import Payment, PaymentEvent, RefundRecord, WebhookEndpoint, WebhookEvent
from paytide.api_keys import Role
from paytide.settings import DEV_SANDBOX_WEBHOOK_SECRET, Settings
from tests.integration.stack import bearer, issue_api_key
from tests.support.ledger_seed import seed_succeeded_payment
from tests.support.serve import serve_api

pytestmark = pytest.mark.integration

UNREACHABLE_TEMPORAL = "127.0.0.1:1"
CODEC_TOKEN = "codec-token-for-hostile-json"

# 30,000 levels fit the 64 KiB body limit of the merchant endpoints; the codec (4 MiB) and the
# webhooks (256 KiB) also get the 100,000 levels of the review.
HOSTILE = {
    "long_integer": (b'{"amount": ' + b"9" * 5000 + b"}", "json_number_too_long"),
    "deep_arrays": (b"[" * 30_000 + b"]" * 30_000, "json_too_deep"),
    "deeper_arrays": (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
    # Parsed by json.loads into a str that no UTF-8 encoder (ledger, gateway SDK) ever writes.
    "unpaired_surrogate": (b'{"metadata": {"note": "\\udfff"}}', "malformed_json"),
}
SMALL_HOSTILE = ["deep_arrays", "long_integer", "unpaired_surrogate"]


@dataclass
class Api:
    client: httpx.AsyncClient
    operator: dict[str, str]
    ledger_url: str
    payment_id: str


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    path: Path = tmp_path_factory.mktemp("hostile_json") / "ledger.db"
    ledger_url = f"sqlite:///{path}"
    engine = create_ledger_engine(ledger_url)
    upgrade(engine)
    settings = Settings(
        database_url=ledger_url,
        temporal_address=UNREACHABLE_TEMPORAL,
        codec_auth_token=CODEC_TOKEN,
    )
    try:
        api_key = issue_api_key(engine, settings.default_merchant)
        operator_key = issue_api_key(engine, "operator", Role.OPERATOR)
        payment = seed_succeeded_payment(
            session_factory(engine), merchant_id=settings.default_merchant
        )
    finally:
        engine.dispose()
    async with (
        serve_api(create_app(settings), settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30.0, headers=bearer(api_key)) as client,
    ):
        yield Api(client, bearer(operator_key), ledger_url, payment.payment_id)


def rows(url: str) -> dict[str, int]:
    engine = create_ledger_engine(url)
    try:
        with Session(engine) as session:
            return {
                model.__name__: session.exec(select(func.count()).select_from(model)).one()
                for model in (Payment, PaymentEvent, RefundRecord, WebhookEndpoint, WebhookEvent)
            }
    finally:
        engine.dispose()


def endpoints(api: Api) -> dict[str, tuple[str, dict[str, str]]]:
    """Every route that parses a JSON body, with the headers that get the body parsed."""
    json_type = {"Content-Type": "application/json"}
    pay = f"/payments/{api.payment_id}"
    return {
        "create_payment": ("/payments", {**json_type, "Idempotency-Key": "hostile-json"}),
        "refund": (f"{pay}/refunds", {**json_type, "Idempotency-Key": "hostile-json-refund"}),
        "capture": (f"{pay}/capture", json_type),
        "cancel": (f"{pay}/cancel", json_type),
        "review": (f"{pay}/review", {**json_type, **api.operator}),
        "create_webhook_endpoint": ("/webhook-endpoints", json_type),
        "update_webhook_endpoint": ("/webhook-endpoints/we_hostile", json_type),
        "codec_encode": ("/codec/encode", {**json_type, **bearer(CODEC_TOKEN)}),
        "codec_decode": ("/codec/decode", {**json_type, **bearer(CODEC_TOKEN)}),
    }


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 400, response.text[:500]
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


@pytest.mark.parametrize("hostile", SMALL_HOSTILE)
@pytest.mark.parametrize(
    "endpoint",
    [
        "create_payment",
        "refund",
        "capture",
        "cancel",
        "review",
        "create_webhook_endpoint",
        "update_webhook_endpoint",
        "codec_encode",
        "codec_decode",
    ],
)
async def test_hostile_json_body_is_400(api: Api, endpoint: str, hostile: str) -> None:
    """A 5,000-digit integer, 30,000 nested arrays (100,000 would pass the 64 KiB body limit
    only on the codec) or an unpaired surrogate is a 400 with the error object, no 500."""
    path, headers = endpoints(api)[endpoint]
    body, code = HOSTILE[hostile]
    before = rows(api.ledger_url)
    response = await api.client.post(path, content=body, headers=headers)
    assert_refused(response, code)
    assert rows(api.ledger_url) == before


async def test_a_payment_with_an_unpaired_surrogate_in_its_metadata_is_400(api: Api) -> None:
    """An otherwise valid payment whose metadata holds "\\ud800" is 400 malformed_json and records
    nothing, instead of a 202 whose charge fails at the gateway's encoder on every try."""
    body = (
        b'{"amount": 1999, "currency": "USD", "customer_id": "cus_s", "order_id": "order_s", '
        b'"payment_method": "pm_sandbox_ok", "metadata": {"note": "gift \\ud800 card"}}'
    )
    path, headers = endpoints(api)["create_payment"]
    before = rows(api.ledger_url)
    response = await api.client.post(path, content=body, headers=headers)
    assert_refused(response, "malformed_json")
    assert "surrogate" in response.json()["error"]["message"]
    assert rows(api.ledger_url) == before


@pytest.mark.parametrize("endpoint", ["codec_encode", "codec_decode"])
async def test_codec_refuses_100_000_nested_arrays(api: Api, endpoint: str) -> None:
    """The codec's larger body limit admits the review's 100,000 nested arrays: still a 400."""
    path, headers = endpoints(api)[endpoint]
    body, code = HOSTILE["deeper_arrays"]
    response = await api.client.post(path, content=body, headers=headers)
    assert_refused(response, code)


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
async def test_signed_hostile_webhook_is_400(api: Api, hostile: str) -> None:
    """A correctly signed webhook with a hostile body is refused (400), and nothing is recorded."""
    body, _code = HOSTILE[hostile]
    signature = signing.sign(DEV_SANDBOX_WEBHOOK_SECRET, body, int(time.time()))
    before = rows(api.ledger_url)
    response = await api.client.post(
        "/webhooks/sandbox",
        content=body,
        headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
    )
    assert_refused(response, "malformed_payload")
    assert rows(api.ledger_url) == before
