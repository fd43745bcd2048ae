"""Disputes end to end: the sandbox opens and decides a dispute on a real charge and sends signed
webhooks to the API, which starts or signals the DisputeWorkflow on the dev server; the ledger
(SQLite and PostgreSQL), the merchant and the operators' channel hear about it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from api.idempotency import dispute_workflow_id
from gateways.sandbox_server.webhooks import build_event
from gateways.signing import sign, verify
from ledger.engine import session_factory, transaction
from ledger.models import DisputeRecord
from tests.integration.stack import MERCHANT_SECRET, Stack, running_stack
from tests.support.serve import serve
from tests.support.webhook_recorder import ReceivedWebhook, WebhookRecorder

OPS_SECRET = "whsec_ops_test"
# The sandbox gives the merchant 3 s to answer; the reminder goes 2 s before: 1 s after opening.
EVIDENCE_SECONDS = 3
REMINDER_BEFORE = 2.0


@dataclass
class DisputeStack:
    stack: Stack
    ops: WebhookRecorder


@pytest.fixture
async def ds(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[DisputeStack]:
    ops = WebhookRecorder()
    async with AsyncExitStack() as exit_stack:
        ops_url = await exit_stack.enter_async_context(serve(ops.app))
        stack = await exit_stack.enter_async_context(
            running_stack(
                dev_env.client,
                database_url,
                ops_alert_url=f"{ops_url}/webhooks",
                ops_alert_secret=OPS_SECRET,
                dispute_reminder_before=REMINDER_BEFORE,
            )
        )
        yield DisputeStack(stack=stack, ops=ops)


async def paid(stack: Stack) -> dict[str, Any]:
    created = await stack.pay(payment_method="pm_sandbox_instant")
    assert created.status_code == 201, created.text
    payment = await stack.wait_final(created.json()["id"])
    assert payment["status"] == "succeeded"
    return payment


async def open_dispute(stack: Stack, charge: str) -> dict[str, Any]:
    response = await stack.sandbox.post(
        f"/v1/charges/{charge}/dispute",
        json={"reason": "fraudulent", "evidence_due_in_seconds": EVIDENCE_SECONDS},
    )
    assert response.status_code == 200, response.text
    dispute: dict[str, Any] = response.json()
    return dispute


async def close_dispute(stack: Stack, dispute_id: str, outcome: str) -> None:
    response = await stack.sandbox.post(
        f"/v1/disputes/{dispute_id}/close", json={"outcome": outcome}
    )
    assert response.status_code == 200, response.text


async def payment_with(stack: Stack, payment_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            payment: dict[str, Any] = (await stack.api.get(f"/payments/{payment_id}")).json()
            if payment["status"] == status:
                return payment
            await asyncio.sleep(0.1)


def merchant_event(kind: str, dispute: dict[str, Any]) -> Any:
    def matches(webhook: ReceivedWebhook) -> bool:
        body = webhook.json()
        return bool(body["type"] == kind and body["data"]["gateway_reference"] == dispute["id"])

    return matches


def dispute_rows(stack: Stack, reference: str) -> list[DisputeRecord]:
    with transaction(session_factory(stack.engine)) as session:
        query = select(DisputeRecord).where(DisputeRecord.dispute_reference == reference)
        return list(session.exec(query))


async def test_dispute_opened_reminded_then_won(ds: DisputeStack) -> None:
    """Opened: payment disputed, merchant and operators told (signed); reminded before the
    evidence is due; won: the payment is succeeded again and shows the won dispute."""
    stack = ds.stack
    payment = await paid(stack)

    dispute = await open_dispute(stack, payment["gateway_reference"])

    created = await stack.merchant.wait_for(merchant_event("dispute.created", dispute))
    verify(created.headers["paytide-signature"], created.body, [MERCHANT_SECRET], 300, time.time())
    assert created.json()["data"]["payment_id"] == payment["id"]
    ops = await ds.ops.wait_for(merchant_event("dispute.created", dispute))
    verify(ops.headers["paytide-signature"], ops.body, [OPS_SECRET], 300, time.time())
    disputed = await payment_with(stack, payment["id"], "disputed")
    assert [(d["gateway_reference"], d["status"]) for d in disputed["disputes"]] == [
        (dispute["id"], "needs_response")
    ]
    reminder = await stack.merchant.wait_for(merchant_event("dispute.evidence_reminder", dispute))
    assert reminder.json()["data"]["evidence_due_by"] is not None

    await close_dispute(stack, dispute["id"], "won")

    await stack.merchant.wait_for(merchant_event("dispute.won", dispute))
    await ds.ops.wait_for(merchant_event("dispute.won", dispute))
    won = await payment_with(stack, payment["id"], "succeeded")
    assert [d["status"] for d in won["disputes"]] == ["won"]
    assert stack.ledger_statuses(payment["id"])[-2:] == ["disputed", "succeeded"]


async def test_dispute_lost_leaves_the_payment_dispute_lost(ds: DisputeStack) -> None:
    """Lost: the payment is dispute_lost, and it can no longer be refunded (409)."""
    stack = ds.stack
    payment = await paid(stack)
    dispute = await open_dispute(stack, payment["gateway_reference"])
    await payment_with(stack, payment["id"], "disputed")

    await close_dispute(stack, dispute["id"], "lost")

    lost = await payment_with(stack, payment["id"], "dispute_lost")
    assert [d["status"] for d in lost["disputes"]] == ["lost"]
    await stack.merchant.wait_for(merchant_event("dispute.lost", dispute))
    refund = await stack.api.post(
        f"/payments/{payment['id']}/refunds",
        json={},
        headers={"Idempotency-Key": f"after-lost-{payment['id']}"},
    )
    assert (refund.status_code, refund.json()["error"]["code"]) == (409, "payment_not_refundable")


async def test_duplicate_dispute_webhook_makes_no_second_dispute(
    ds: DisputeStack, dev_env: WorkflowEnvironment
) -> None:
    """The sandbox's dispute.created, re-delivered twice more (signed afresh): one workflow run,
    one ledger dispute, one merchant notice."""
    stack = ds.stack
    payment = await paid(stack)
    dispute = await open_dispute(stack, payment["gateway_reference"])
    await stack.merchant.wait_for(merchant_event("dispute.created", dispute))
    handle = dev_env.client.get_workflow_handle(dispute_workflow_id("sandbox", dispute["id"]))
    first_run = (await handle.describe()).run_id

    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    event = build_event(dispute, "dispute.created", int(time.time()))
    body = json.dumps(event, separators=(",", ":")).encode()
    answers = [
        await stack.api.post(
            "/webhooks/sandbox",
            content=body,
            headers={"Sandbox-Signature": sign(secret, body, int(time.time()))},
        )
        for _ in range(2)
    ]

    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["deliveries"] for a in answers] == [["signalled"], ["signalled"]]
    await asyncio.sleep(1.0)  # time for a second notice to arrive, if one were sent
    assert len(dispute_rows(stack, dispute["id"])) == 1
    notices = [w for w in stack.merchant.delivered if merchant_event("dispute.created", dispute)(w)]
    assert len(notices) == 1
    assert (await handle.describe()).run_id == first_run
