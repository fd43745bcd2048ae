"""Two merchants whose ids and keys would spell the same workflow id under a `-` separator:
each gets its own payment and its own refund, over HTTP (API, worker, dev server, sandbox, ledger
on SQLite and PostgreSQL); and no merchant id can hold the `:` that separates merchant and key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from api.idempotency import refund_workflow_id, workflow_id
from ledger import merchants
from ledger.engine import session_factory, transaction
from ledger.models import Merchant
from paytide.api_keys import Role
from tests.integration.stack import Stack, bearer, issue_api_key, running_stack


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as running:
        yield running


def _client(stack: Stack, merchant_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.settings.effective_api_url,
        timeout=30,
        headers=bearer(issue_api_key(stack.engine, merchant_id)),
    )


def _payment_body(order: str, amount: int) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "USD",
        "customer_id": f"cus_{order}",
        "payment_method": "pm_sandbox_instant",
        "order_id": order,
    }


async def _succeeded(api: httpx.AsyncClient, payment_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            shown = await api.get(f"/payments/{payment_id}")
            assert shown.status_code == 200, shown.text
            payment: dict[str, Any] = shown.json()
            if payment["status"] == "succeeded":
                return payment
            await asyncio.sleep(0.1)


async def test_merchants_whose_id_and_key_overlap_get_their_own_payments(stack: Stack) -> None:
    """Merchant `x` with key `eu-order-77` and merchant `x-eu` with key `order-77`: both 201, two
    payments, each merchant sees only its own amount and order."""
    base = f"m{uuid.uuid4().hex[:8]}"
    async with _client(stack, base) as first, _client(stack, f"{base}-eu") as second:
        one = await first.post(
            "/payments", json=_payment_body("order-a", 1000), headers={"Idempotency-Key": "eu-o-77"}
        )
        two = await second.post(
            "/payments", json=_payment_body("order-b", 2500), headers={"Idempotency-Key": "o-77"}
        )

        assert (one.status_code, two.status_code) == (201, 201), (one.text, two.text)
        assert one.json()["id"] != two.json()["id"]
        mine = (await first.get(f"/payments/{one.json()['id']}")).json()
        theirs = (await second.get(f"/payments/{two.json()['id']}")).json()
        assert (mine["amount"], mine["order_id"]) == (1000, "order-a")
        assert (theirs["amount"], theirs["order_id"]) == (2500, "order-b")
        assert (await first.get(f"/payments/{two.json()['id']}")).status_code == 404


async def test_merchants_whose_id_and_key_overlap_get_their_own_refunds(stack: Stack) -> None:
    """Refund key `eu-r-1` of merchant `x` and `r-1` of merchant `x-eu`: both 201, two refunds,
    each on its own payment."""
    base = f"m{uuid.uuid4().hex[:8]}"
    async with _client(stack, base) as first, _client(stack, f"{base}-eu") as second:
        paid = []
        for api, amount in ((first, 1000), (second, 2500)):
            created = await api.post(
                "/payments", json=_payment_body(uuid.uuid4().hex[:8], amount), headers={}
            )
            assert created.status_code == 201, created.text
            paid.append(await _succeeded(api, created.json()["id"]))

        one = await first.post(
            f"/payments/{paid[0]['id']}/refunds",
            json={"amount": 100},
            headers={"Idempotency-Key": "eu-r-1"},
        )
        two = await second.post(
            f"/payments/{paid[1]['id']}/refunds",
            json={"amount": 200},
            headers={"Idempotency-Key": "r-1"},
        )

        assert (one.status_code, two.status_code) == (201, 201), (one.text, two.text)
        assert one.json()["id"] != two.json()["id"]
        mine = await first.get(f"/payments/{paid[0]['id']}/refunds/{one.json()['id']}")
        theirs = await second.get(f"/payments/{paid[1]['id']}/refunds/{two.json()['id']}")
        assert (mine.json()["amount"], mine.json()["payment_id"]) == (100, paid[0]["id"])
        assert (theirs.json()["amount"], theirs.json()["payment_id"]) == (200, paid[1]["id"])


@pytest.mark.parametrize("make", [merchants.create_merchant, merchants.ensure_merchant])
def test_a_merchant_id_holding_the_separator_is_refused(ledger_engine: Engine, make: Any) -> None:
    """`acme:eu` cannot become a merchant (created or ensured): the error names ':'; no row."""
    merchant_id = f"m{uuid.uuid4().hex[:8]}:eu"
    with pytest.raises(merchants.MerchantError, match="never ':'"):
        with transaction(session_factory(ledger_engine)) as session:
            make(session, merchant_id=merchant_id, name="Colon", role=Role.MERCHANT)
    with transaction(session_factory(ledger_engine)) as session:
        assert session.get(Merchant, merchant_id) is None


def test_the_merchant_ends_at_the_first_separator() -> None:
    """Ids of overlapping merchant/key pairs differ; a key may itself contain ':'."""
    assert workflow_id("acme", "eu-order-77") != workflow_id("acme-eu", "order-77")
    assert workflow_id("acme", "eu:order-77") == "payment:acme:eu:order-77"
    assert refund_workflow_id("acme", "eu-r-1") != refund_workflow_id("acme-eu", "r-1")
