"""Partial capture end to end over HTTP: API, worker, Temporal dev server, the sandbox gateway and
its signed webhooks, ledger (SQLite and PostgreSQL). What was captured is what can be refunded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from ledger.engine import session_factory, transaction
from ledger.models import Payment
from tests.integration.stack import Stack, running_stack


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as running:
        yield running


async def authorized(stack: Stack, amount: int) -> dict[str, Any]:
    created = await stack.pay(amount=amount, capture="manual", payment_method="pm_sandbox_instant")
    assert created.status_code == 201, created.text
    payment: dict[str, Any] = created.json()
    async with asyncio.timeout(30):
        while payment["status"] != "authorized":
            await asyncio.sleep(0.1)
            payment = (await stack.api.get(f"/payments/{payment['id']}")).json()
    return payment


async def refund(stack: Stack, payment_id: str, amount: int) -> httpx.Response:
    return await stack.api.post(
        f"/payments/{payment_id}/refunds",
        json={"amount": amount},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


async def settled(stack: Stack, payment_id: str, refund_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            found: dict[str, Any] = (
                await stack.api.get(f"/payments/{payment_id}/refunds/{refund_id}")
            ).json()
            if found["status"] != "pending":
                return found
            await asyncio.sleep(0.1)


async def sandbox_refunds(stack: Stack, charge: str) -> int:
    stats = (await stack.sandbox.get("/v1/stats")).json()
    return int(stats["refunds_by_charge"].get(charge, 0))


def captured_in_ledger(stack: Stack, payment_id: str) -> int | None:
    with transaction(session_factory(stack.engine)) as session:
        row = session.get(Payment, payment_id)
        assert row is not None
        return row.amount_captured


async def test_refunds_are_bounded_by_the_captured_amount(stack: Stack) -> None:
    """1,000 authorized, 300 captured: GET shows amount_captured 300; a refund of 1,000 is 422
    refund_exceeds_refundable (refundable 300) and reaches neither ledger nor gateway; 300 is
    refunded; one more unit is 422 again."""
    payment = await authorized(stack, 1000)

    captured = await stack.api.post(f"/payments/{payment['id']}/capture", json={"amount": 300})

    assert captured.status_code == 200, captured.text
    assert (captured.json()["status"], captured.json()["amount_captured"]) == ("succeeded", 300)
    shown = (await stack.api.get(f"/payments/{payment['id']}")).json()
    assert (shown["amount"], shown["amount_captured"]) == (1000, 300)
    assert captured_in_ledger(stack, payment["id"]) == 300

    over = await refund(stack, payment["id"], 1000)
    assert over.status_code == 422, over.text
    assert over.json()["error"]["code"] == "refund_exceeds_refundable"
    assert over.json()["error"]["details"] == {"refundable": 300}
    assert (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"] == []
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 0

    whole = await refund(stack, payment["id"], 300)
    assert whole.status_code == 201, whole.text
    assert (await settled(stack, payment["id"], whole.json()["id"]))["status"] == "succeeded"
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == "refunded"

    one_more = await refund(stack, payment["id"], 1)
    assert one_more.status_code == 422, one_more.text
    assert one_more.json()["error"]["code"] == "refund_exceeds_refundable"
    assert one_more.json()["error"]["details"] == {"refundable": 0}
    listed = (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"]
    assert [(r["amount"], r["status"]) for r in listed] == [(300, "succeeded")]
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 1


async def test_automatic_capture_records_the_whole_amount(stack: Stack) -> None:
    """An automatic-capture payment shows amount_captured equal to its amount, in the API and
    in the ledger."""
    created = await stack.pay(amount=1234, payment_method="pm_sandbox_instant")
    assert created.status_code == 201, created.text
    final = await stack.wait_final(created.json()["id"])

    assert (final["status"], final["amount_captured"]) == ("succeeded", 1234)
    assert captured_in_ledger(stack, final["id"]) == 1234
