"""Refunds end to end over HTTP: API, worker, Temporal dev server, sandbox with its signed refund
webhooks, ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from gateways.signing import sign, verify
from ledger.engine import session_factory, transaction
from ledger.models import WebhookEvent
from tests.integration.stack import MERCHANT_SECRET, Stack, late_worker, running_stack


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as running:
        yield running


async def paid(stack: Stack, payment_method: str = "pm_sandbox_instant") -> dict[str, Any]:
    created = await stack.pay(payment_method=payment_method)
    assert created.status_code == 201, created.text
    payment = await stack.wait_final(created.json()["id"])
    assert payment["status"] == "succeeded", payment
    return payment


async def refund(
    stack: Stack, payment_id: str, key: str | None = None, **body: Any
) -> httpx.Response:
    return await stack.api.post(
        f"/payments/{payment_id}/refunds",
        json=body,
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def refund_until_named(
    stack: Stack, payment_id: str, key: str, **body: Any
) -> httpx.Response:
    """As a client must: 409 refund_in_progress (its workflow has started, but no worker has
    reserved it yet) is the same request again after Retry-After."""
    async with asyncio.timeout(60):
        while True:
            response = await refund(stack, payment_id, key, **body)
            if not (
                response.status_code == 409
                and response.json()["error"]["code"] == "refund_in_progress"
            ):
                return response
            await asyncio.sleep(float(response.headers["Retry-After"]))


async def settled(stack: Stack, payment_id: str, refund_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            response = await stack.api.get(f"/payments/{payment_id}/refunds/{refund_id}")
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            if found["status"] != "pending":
                return found
            await asyncio.sleep(0.1)


async def sandbox_refunds(stack: Stack, charge: str) -> int:
    stats = (await stack.sandbox.get("/v1/stats")).json()
    return int(stats["refunds_by_charge"].get(charge, 0))


async def test_full_refund_settles_by_signed_webhook(stack: Stack) -> None:
    """No amount refunds it all: 201 pending, the sandbox's signed refund.succeeded settles it,
    the payment becomes refunded, shows its refund, and the merchant is told."""
    payment = await paid(stack)

    created = await refund(stack, payment["id"], reason="requested_by_customer")

    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["object"], body["status"], body["amount"]) == ("refund", "pending", 1999)
    final = await settled(stack, payment["id"], body["id"])
    assert final["status"] == "succeeded"
    assert final["gateway_reference"].startswith("re_")
    shown = (await stack.api.get(f"/payments/{payment['id']}")).json()
    assert shown["status"] == "refunded"
    assert [r["id"] for r in shown["refunds"]] == [body["id"]]
    assert stack.ledger_statuses(payment["id"])[-1] == "refunded"
    assert ("refund.succeeded", "signalled") in stack.webhook_deliveries(payment["id"])
    notice = await stack.merchant.wait_for(lambda w: w.json()["type"] == "refund.succeeded")
    verify(notice.headers["paytide-signature"], notice.body, [MERCHANT_SECRET], 300, time.time())
    assert notice.json()["data"]["id"] == body["id"]
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 1


async def test_partial_refunds_up_to_the_total_then_over_refund_is_422(stack: Stack) -> None:
    """1000 then 999 of 1999: partially_refunded, then refunded; one more is 422 with what is
    refundable (0), and changes nothing."""
    payment = await paid(stack)

    first = await refund(stack, payment["id"], amount=1000)
    assert first.status_code == 201, first.text
    assert (await settled(stack, payment["id"], first.json()["id"]))["status"] == "succeeded"
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == (
        "partially_refunded"
    )
    second = await refund(stack, payment["id"], amount=999)
    assert second.status_code == 201, second.text
    assert (await settled(stack, payment["id"], second.json()["id"]))["status"] == "succeeded"
    over = await refund(stack, payment["id"], amount=1)

    assert over.status_code == 422, over.text
    assert over.json()["error"]["code"] == "refund_exceeds_refundable"
    assert over.json()["error"]["details"] == {"refundable": 0}
    listed = (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"]
    assert [(r["amount"], r["status"]) for r in listed] == [(1000, "succeeded"), (999, "succeeded")]
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == "refunded"
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 2


async def test_over_refund_is_rejected_before_the_gateway(stack: Stack) -> None:
    """2000 of a 1999 payment: 422 refund_exceeds_refundable with refundable 1999; no refund. The
    same request again is refused again; the key with another body is idempotency_key_reused."""
    payment = await paid(stack)

    key = uuid.uuid4().hex
    over = await refund(stack, payment["id"], key, amount=2000)
    again = await refund(stack, payment["id"], key, amount=2000)
    other = await refund(stack, payment["id"], key, amount=10)

    assert (again.status_code, again.json()["error"]["code"]) == (422, "refund_exceeds_refundable")
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert over.status_code == 422, over.text
    assert over.json()["error"] == {
        "code": "refund_exceeds_refundable",
        "message": over.json()["error"]["message"],
        "details": {"refundable": 1999},
    }
    assert (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"] == []
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 0
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == "succeeded"


async def test_concurrent_refunds_that_together_exceed_it_exactly_one_wins(stack: Stack) -> None:
    """Four concurrent refunds of 1200 of 1999, each with its own key: one 201, three 422."""
    payment = await paid(stack)

    answers = await asyncio.gather(*(refund(stack, payment["id"], amount=1200) for _ in range(4)))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201, 422, 422, 422], [a.text for a in answers]
    refused = [a.json()["error"] for a in answers if a.status_code == 422]
    assert {e["code"] for e in refused} == {"refund_exceeds_refundable"}
    assert {e["details"]["refundable"] for e in refused} == {799}
    [winner] = [a.json() for a in answers if a.status_code == 201]
    assert (await settled(stack, payment["id"], winner["id"]))["status"] == "succeeded"
    listed = (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"]
    assert [(r["id"], r["amount"]) for r in listed] == [(winner["id"], 1200)]
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 1


async def test_refund_replay_by_key_and_key_reuse(stack: Stack) -> None:
    """Same key + same body: the same refund (200, Idempotent-Replayed), before and after it
    settles; same key + another body: 422 idempotency_key_reused; one refund at the sandbox."""
    payment = await paid(stack)
    key = uuid.uuid4().hex

    first = await refund(stack, payment["id"], key, amount=500, reason="duplicate")
    again = await refund(stack, payment["id"], key, amount=500, reason="duplicate")
    other = await refund(stack, payment["id"], key, amount=501, reason="duplicate")
    await settled(stack, payment["id"], first.json()["id"])
    after = await refund(stack, payment["id"], key, amount=500, reason="duplicate")

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert after.status_code == 200
    assert (after.json()["id"], after.json()["status"]) == (first.json()["id"], "succeeded")
    assert await sandbox_refunds(stack, payment["gateway_reference"]) == 1


async def test_post_names_a_refund_only_once_get_can_find_it(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Until a worker has reserved the refund in the ledger, POST /payments/{id}/refunds answers
    409 refund_in_progress, not a 202 whose Location is 404; once reserved, the same request is
    answered with the refund, and a 202 (no worker to answer) names a Location GET finds."""
    # The refund webhook comes long after the test: the refund stays pending in the ledger.
    async with running_stack(
        dev_env.client,
        database_url,
        in_process_worker=False,
        initiate_wait=1.0,
        sandbox_webhook_delay=60.0,
    ) as stack:
        async with late_worker(stack, dev_env.client):
            created = await stack.pay(payment_method="pm_sandbox_instant")
            assert created.status_code in (201, 202), created.text
            payment = await stack.wait_final(created.json()["id"])
            assert payment["status"] == "succeeded", payment
        path = f"/payments/{payment['id']}/refunds"
        key = uuid.uuid4().hex
        body = {"amount": 500, "reason": "requested_by_customer"}

        # No worker: the refund's workflow has started, but nothing has reserved it yet.
        early = await refund(stack, payment["id"], key, **body)
        if "location" in early.headers:
            location = early.headers["location"]
            found = await stack.api.get(location)
            assert found.status_code == 200, f"{early.status_code} named {location}: {found.text}"
        assert early.status_code == 409, early.text
        assert early.json()["error"]["code"] == "refund_in_progress"
        assert early.headers["retry-after"] == "1"
        assert (await stack.api.get(path)).json()["data"] == []

        async with late_worker(stack, dev_env.client):
            # The same request again, as Retry-After asks: the first request's workflow answers
            # (so a replay), or a 202 now that the ledger has the refund.
            named = await refund_until_named(stack, payment["id"], key, **body)
            assert named.status_code in (200, 202), named.text
            refund_id = named.json()["id"]
            found = await stack.api.get(f"{path}/{refund_id}")
            assert found.status_code == 200, found.text
            assert (found.json()["status"], found.json()["amount"]) == ("pending", 500)

        # Reserved, and no worker to answer: 202, and its Location is found.
        accepted = await refund(stack, payment["id"], key, **body)
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["location"] == f"{path}/{refund_id}"
        found = await stack.api.get(accepted.headers["location"])
        assert found.status_code == 200, found.text
        assert [r["id"] for r in (await stack.api.get(path)).json()["data"]] == [refund_id]


async def test_refund_declined_by_the_gateway_is_recorded_with_its_reason(stack: Stack) -> None:
    """pm_sandbox_refund_fails: the refund ends failed/refund_declined by the signed webhook; the
    payment stays succeeded and the merchant hears refund.failed."""
    payment = await paid(stack, "pm_sandbox_refund_fails")

    created = await refund(stack, payment["id"], amount=700)

    assert created.status_code == 201, created.text
    final = await settled(stack, payment["id"], created.json()["id"])
    assert final["status"] == "failed"
    assert final["failure"]["code"] == "refund_declined"
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == "succeeded"
    notice = await stack.merchant.wait_for(lambda w: w.json()["type"] == "refund.failed")
    assert notice.json()["data"]["id"] == created.json()["id"]


async def test_refund_event_for_an_unknown_refund_is_acknowledged_and_recorded(
    stack: Stack,
) -> None:
    """A verified refund webhook no refund of ours matches: 200, recorded as unknown_refund."""
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    body = json.dumps(
        {
            "id": event_id,
            "type": "refund.succeeded",
            "created": int(time.time()),
            "data": {
                "id": f"re_{uuid.uuid4().hex[:12]}",
                "object": "refund",
                "charge": "ch_unknown",
                "amount": 100,
                "currency": "USD",
                "status": "succeeded",
                "metadata": {},
            },
        }
    ).encode()
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()

    response = await stack.api.post(
        "/webhooks/sandbox",
        content=body,
        headers={"Sandbox-Signature": sign(secret, body, int(time.time()))},
    )

    assert response.status_code == 200, response.text
    assert response.json()["deliveries"] == ["unknown_refund"]
    with transaction(session_factory(stack.engine)) as session:
        row = session.exec(select(WebhookEvent).where(WebhookEvent.event_id == event_id)).one()
        assert (row.event_type, row.delivery) == ("refund.succeeded", "unknown_refund")


async def test_refund_requests_that_cannot_be_taken(stack: Stack) -> None:
    """No key: 400; a bad amount: 422; an unknown payment: 404; an unsettled payment: 409."""
    payment = await paid(stack)
    no_key = await stack.api.post(f"/payments/{payment['id']}/refunds", json={})
    bad_amount = await refund(stack, payment["id"], amount=0)
    unknown = await refund(stack, "pay_unknown")
    waiting = (await stack.pay(payment_method="pm_sandbox_silent")).json()
    unsettled = await refund(stack, waiting["id"])

    assert (no_key.status_code, no_key.json()["error"]["code"]) == (
        400,
        "idempotency_key_required",
    )
    assert (bad_amount.status_code, bad_amount.json()["error"]["code"]) == (
        422,
        "validation_failed",
    )
    assert bad_amount.json()["error"]["details"][0]["field"] == "amount"
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "payment_not_found")
    assert (unsettled.status_code, unsettled.json()["error"]["code"]) == (
        409,
        "payment_not_refundable",
    )
    assert (await stack.api.get(f"/payments/{payment['id']}/refunds")).json()["data"] == []
