"""Payments end to end over HTTP: API, worker, Temporal dev server, sandbox, ledger (both DBs)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlmodel import select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from gateways.signing import sign, verify
from ledger.engine import session_factory, transaction
from ledger.models import Payment, WebhookEvent
from tests.integration.stack import MERCHANT_SECRET, Stack, late_worker, running_stack
from tests.support.update_gate import UpdateGate


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as running:
        yield running


async def test_ok_payment_succeeds_through_the_signed_webhook(stack: Stack) -> None:
    """pm_sandbox_ok: 201 pending, then the sandbox's signed webhook settles it; charged once."""
    created = await stack.pay(payment_method="pm_sandbox_ok")
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "awaiting_webhook"
    assert payment["gateway"] == "sandbox"
    assert payment["gateway_reference"].startswith("ch_")

    final = await stack.wait_final(payment["id"])

    assert final["status"] == "succeeded"
    assert stack.ledger_statuses(payment["id"]) == [
        "received",
        "risk_check",
        "charging",
        "awaiting_webhook",
        "succeeded",
    ]
    assert ("charge.succeeded", "signalled") in stack.webhook_deliveries(payment["id"])
    assert await stack.charges_for(payment["id"]) == 1
    notice = await stack.merchant.wait_for(lambda w: w.json()["data"]["id"] == payment["id"])
    verify(
        notice.headers["paytide-signature"],
        notice.body,
        [MERCHANT_SECRET],
        tolerance_seconds=300,
        now=time.time(),
    )
    assert notice.json()["type"] == "payment.succeeded"


async def test_decline_is_answered_at_once_and_recorded(stack: Stack) -> None:
    """pm_sandbox_decline: the POST answers failed/card_declined; its webhook is recorded."""
    created = await stack.pay(payment_method="pm_sandbox_decline")
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "failed"
    assert payment["failure"]["code"] == "card_declined"
    assert payment["failure"]["retryable"] is False

    async with asyncio.timeout(10):
        while not any(t == "charge.failed" for t, _ in stack.webhook_deliveries(payment["id"])):
            await asyncio.sleep(0.1)
    final = await stack.wait_final(payment["id"])
    assert final["status"] == "failed"
    assert await stack.charges_for(payment["id"]) == 1


async def test_replay_and_key_reuse(stack: Stack) -> None:
    """Same key + same body replays the payment (200); same key + other body is 422."""
    key = uuid.uuid4().hex
    first = await stack.pay(key, order_id="order_replay", customer_id="cus_replay")
    assert first.status_code == 201
    again = await stack.pay(key, order_id="order_replay", customer_id="cus_replay")
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]

    other = await stack.pay(key, order_id="order_replay", customer_id="cus_replay", amount=5)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"

    await stack.wait_final(first.json()["id"])
    after_close = await stack.pay(key, order_id="order_replay", customer_id="cus_replay")
    assert after_close.status_code == 200
    assert after_close.json()["status"] == "succeeded"
    reused_after_close = await stack.pay(key, order_id="order_other", customer_id="cus_replay")
    assert reused_after_close.status_code == 422
    assert await stack.charges_for(first.json()["id"]) == 1


async def test_fifty_concurrent_requests_with_one_key_charge_once(stack: Stack) -> None:
    """50 concurrent POSTs with one key: one workflow, one sandbox charge, 50 identical ids."""
    key = uuid.uuid4().hex
    body = {"order_id": "order_burst", "customer_id": "cus_burst"}
    responses = await asyncio.gather(*(stack.pay(key, **body) for _ in range(50)))

    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.status_code == 201 for r in responses) == 1
    payment_id = ids.pop()
    assert (await stack.wait_final(payment_id))["status"] == "succeeded"
    assert await stack.charges_for(payment_id) == 1
    assert stack.ledger_statuses(payment_id).count("charging") == 1


async def test_three_d_secure_over_http(stack: Stack) -> None:
    """pm_sandbox_3ds answers requires_action with a client secret; completing it succeeds."""
    created = await stack.pay(payment_method="pm_sandbox_3ds")
    payment = created.json()
    assert payment["status"] == "requires_action"
    assert payment["client_secret"]
    assert payment["next_action"]["type"] == "redirect_to_url"
    read_back = (await stack.api.get(f"/payments/{payment['id']}")).json()
    assert read_back["client_secret"] == payment["client_secret"]

    done = await stack.sandbox.post(
        f"/v1/charges/{payment['gateway_reference']}/3ds",
        json={"result": "success", "client_secret": payment["client_secret"]},
    )
    assert done.status_code == 200, done.text
    final = await stack.wait_final(payment["id"])
    assert final["status"] == "succeeded"
    assert "client_secret" not in final


async def test_cancel_before_capture_and_not_after(stack: Stack) -> None:
    """A silent (pending) payment can be canceled; a succeeded one answers 409."""
    pending = (await stack.pay(payment_method="pm_sandbox_silent")).json()
    assert pending["status"] == "awaiting_webhook"
    canceled = await stack.api.post(f"/payments/{pending['id']}/cancel", json={"reason": "test"})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert (await stack.wait_final(pending["id"]))["status"] == "canceled"

    paid = (await stack.pay()).json()
    await stack.wait_final(paid["id"])
    late = await stack.api.post(f"/payments/{paid['id']}/cancel")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "payment_not_cancelable"


async def test_a_cancel_reaching_a_payment_as_it_ends_gets_the_same_409(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A cancel read from the ledger before the payment ended, whose update reaches its workflow
    while it finishes or after it closed, answers like one sent afterwards: 409
    payment_not_cancelable, "payment has ended: it is canceled", the final payment in details."""
    gate = UpdateGate()  # holds the API's updates: the API has read the ledger, then waits
    client = Client(**{**dev_env.client.config(), "interceptors": [gate]})
    async with running_stack(client, database_url) as stack:
        pending = (await stack.pay(payment_method="pm_sandbox_silent")).json()
        assert pending["status"] == "awaiting_webhook"
        # The merchant's notification of the cancel stalls: the ledger says canceled while the
        # workflow, waiting for that answer, has not closed.
        stack.merchant.answering.clear()

        async def cancel() -> httpx.Response:
            return await stack.api.post(f"/payments/{pending['id']}/cancel", json={"reason": "t"})

        while_finishing = asyncio.create_task(cancel())
        let_through_while_finishing = await gate.arrived.get()
        after_closing = asyncio.create_task(cancel())
        let_through_after_closing = await gate.arrived.get()
        first = asyncio.create_task(cancel())
        (await gate.arrived.get()).set()
        canceled = await first
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"

        let_through_while_finishing.set()
        refused_while_finishing = await while_finishing
        refused_by_ledger = await cancel()
        stack.merchant.answering.set()
        with transaction(session_factory(stack.engine)) as session:
            row = session.get(Payment, pending["id"])
            assert row is not None
        await dev_env.client.get_workflow_handle(row.workflow_id).result()  # closed
        let_through_after_closing.set()
        refused_after_closing = await after_closing

    by_ledger, while_finishing, after_closing = (
        (response.status_code, response.json()["error"])
        for response in (refused_by_ledger, refused_while_finishing, refused_after_closing)
    )
    assert while_finishing == by_ledger
    assert after_closing == by_ledger
    status, error = by_ledger
    assert status == 409
    assert error["code"] == "payment_not_cancelable"
    assert error["message"] == "payment has ended: it is canceled"
    assert error["details"]["id"] == pending["id"]
    assert error["details"]["status"] == "canceled"


async def test_flaky_gateway_is_retried_and_charges_once(stack: Stack) -> None:
    """pm_sandbox_flaky answers 503 twice; the activity retries with one key; one charge."""
    key = uuid.uuid4().hex
    created = await stack.pay(key, payment_method="pm_sandbox_flaky")
    payment = created.json()
    final = await stack.wait_final(payment["id"])
    assert final["status"] == "succeeded"
    assert await stack.charges_for(payment["id"]) == 1
    merchant = stack.settings.default_merchant
    requests = await stack.requests_for_keys(f"payment:{merchant}:{key}/charge/")
    assert requests == {f"payment:{merchant}:{key}/charge/1": 3}


async def test_list_payments_by_customer_with_cursor(stack: Stack) -> None:
    """GET /payments filters by customer and pages with a cursor, newest first, no repeats."""
    customer = f"cus_{uuid.uuid4().hex[:8]}"
    made = [(await stack.pay(customer_id=customer)).json()["id"] for _ in range(3)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"customer_id": customer, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await stack.api.get("/payments", params=params)).json()
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == 3


async def test_slow_initiation_answers_202_with_location(
    dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """When the gateway is slower than PAYTIDE_INITIATE_WAIT, the API answers 202 + Location."""
    async with running_stack(dev_env.client, sqlite_url, initiate_wait=0.3) as stack:
        created = await stack.pay(payment_method="pm_sandbox_slow")
        assert created.status_code == 202, created.text
        location = created.headers["location"]
        assert location == f"/payments/{created.json()['id']}"
        final = await stack.wait_final(created.json()["id"])
        assert final["status"] == "succeeded"


async def test_post_names_a_payment_only_once_get_and_cancel_can_find_it(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """Until a worker has admitted the payment into the ledger, POST /payments answers 409
    payment_in_progress, not a 202 whose Location is 404; once admitted, its 202 Location is
    found by GET and cancel."""
    async with running_stack(
        dev_env.client,
        database_url,
        in_process_worker=False,
        initiate_wait=0.5,
        sandbox_slow_delay=5.0,
    ) as stack:
        key = uuid.uuid4().hex
        body = {
            "amount": 1999,
            "currency": "USD",
            "customer_id": f"cus_{key[:8]}",
            "payment_method": "pm_sandbox_slow",
            "order_id": f"order_{key[:8]}",
        }
        # No worker yet: the workflow has started, but nothing has written its ledger row.
        early = await stack.api.post("/payments", json=body, headers={"Idempotency-Key": key})
        if "location" in early.headers:
            location = early.headers["location"]
            found = await stack.api.get(location)
            assert found.status_code == 200, f"{early.status_code} named {location}: {found.text}"
            canceled = await stack.api.post(f"{location}/cancel", json={"reason": "test"})
            assert canceled.status_code != 404, f"{location}/cancel: {canceled.text}"
        assert early.status_code == 409, early.text
        assert early.json()["error"]["code"] == "payment_in_progress"
        assert early.headers["retry-after"] == "1"

        async with late_worker(stack, dev_env.client):
            # The same request again, as Retry-After asks, until the API acknowledges it.
            acknowledged = await stack.pay(key, **body)
            assert acknowledged.status_code == 202, acknowledged.text
            location = acknowledged.headers["location"]
            payment_id = acknowledged.json()["id"]
            assert location == f"/payments/{payment_id}"
            found = await stack.api.get(location)
            assert found.status_code == 200, found.text
            canceled = await stack.api.post(f"{location}/cancel", json={"reason": "test"})
            assert canceled.status_code == 202, canceled.text
            final = await stack.wait_final(payment_id)
        assert final["status"] == "canceled"
        assert await stack.charges_for(payment_id) <= 1


async def test_review_queue_and_decision_over_http(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A payment in review is listed in GET /reviews; an approval over HTTP charges it once."""
    async with running_stack(
        dev_env.client, database_url, risk_review_score=0, risk_block_score=100
    ) as stack:
        created = await stack.pay()
        assert created.status_code == 201, created.text
        payment = created.json()
        assert payment["status"] == "in_review"
        queue = (await stack.operator.get("/reviews")).json()["data"]
        assert payment["id"] in [p["id"] for p in queue]

        decision = {"decision": "approve", "reviewer": "ana", "reason": "known customer"}
        approved = await stack.operator.post(f"/payments/{payment['id']}/review", json=decision)
        assert approved.status_code == 200, approved.text
        final = await stack.wait_final(payment["id"])
        assert final["status"] == "succeeded"
        assert await stack.charges_for(payment["id"]) == 1

        late = await stack.operator.post(
            f"/payments/{payment['id']}/review",
            json={"decision": "reject", "reviewer": "bo", "reason": "too late"},
        )
        assert late.status_code == 409
        assert payment["id"] not in [
            p["id"] for p in (await stack.operator.get("/reviews")).json()["data"]
        ]
        bad = await stack.operator.post(
            f"/payments/{payment['id']}/review", json={"decision": "maybe"}
        )
        assert bad.status_code == 422


async def test_verified_webhook_for_an_unknown_payment_is_recorded_and_acknowledged(
    stack: Stack,
) -> None:
    """A signed event about no payment of ours: 200 (no endless retries), recorded once."""
    event = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "data": {
            "id": f"ch_{uuid.uuid4().hex[:20]}",
            "status": "succeeded",
            "amount": 100,
            "currency": "USD",
            "reference": "pay_not_ours",
            "metadata": {},
        },
    }
    body = json.dumps(event).encode()
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    for _ in range(2):  # a re-delivery is acknowledged the same way
        headers = {"Sandbox-Signature": sign(secret, body, int(time.time()))}
        answer = await stack.api.post("/webhooks/sandbox", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["deliveries"] == ["unknown_payment"]

    with transaction(session_factory(stack.engine)) as session:
        rows = session.exec(select(WebhookEvent).where(WebhookEvent.event_id == event["id"])).all()
    assert [(row.delivery, row.payment_id) for row in rows] == [("unknown_payment", None)]
