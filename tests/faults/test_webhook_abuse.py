"""Scenario 4: webhooks tripled, shuffled, late, forged and replayed settle payments correctly."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import httpx
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from gateways.sandbox_server.webhooks import SIGNATURE_HEADER
from gateways.signing import sign
from ledger.engine import session_factory, transaction
from ledger.models import Payment, WebhookEvent
from tests.faults.harness import FaultTable, measure
from tests.integration.stack import Stack, running_stack

PAYMENTS = 8
COPIES = 3
WEBHOOK_TIMEOUT = 1.0
FORGED_SECRET = "whsec_not_the_sandbox"  # a wrong secret, on purpose
REPLAY_AGE_SECONDS = 3600


def _event(charge: dict[str, Any], succeeded: bool) -> dict[str, Any]:
    """The sandbox's event for ``charge`` reaching an outcome, with a fresh event id."""
    if succeeded:
        data = {**charge, "status": "succeeded", "amount_captured": charge["amount"]}
        event_type = "charge.succeeded"
    else:
        failure = {"code": "card_declined", "message": "declined", "retryable": False}
        data = {**charge, "status": "declined", "failure": failure}
        event_type = "charge.failed"
    return {
        "id": f"evt_fault_{uuid.uuid4().hex[:20]}",
        "type": event_type,
        "created": int(time.time()),
        "data": data,
    }


async def _post(stack: Stack, event: dict[str, Any], secret: str, at: int) -> httpx.Response:
    body = json.dumps(event, separators=(",", ":")).encode()
    return await stack.api.post(
        "/webhooks/sandbox",
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body, at)},
    )


async def _deliver(
    stack: Stack, charges: dict[str, dict[str, Any]], outcome: dict[str, bool]
) -> list[str]:
    """Forge and replay the wrong outcome, then send the right one 3x, all shuffled together.

    Returns the ids of the events that must have been rejected.
    """
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    now = int(time.time())
    sends: list[tuple[dict[str, Any], str, int, int]] = []
    rejected: list[str] = []
    for payment_id, charge in charges.items():
        genuine = _event(charge, outcome[payment_id])
        forged = _event(charge, not outcome[payment_id])
        replayed = _event(charge, not outcome[payment_id])
        rejected += [forged["id"], replayed["id"]]
        sends += [(genuine, secret, now, 200)] * COPIES
        sends += [
            (forged, FORGED_SECRET, now, 400),
            (replayed, secret, now - REPLAY_AGE_SECONDS, 400),
        ]
    random.shuffle(sends)
    answers = await asyncio.gather(*(_post(stack, e, s, at) for e, s, at, _ in sends))
    for (event, _, _, expected), answer in zip(sends, answers, strict=True):
        assert answer.status_code == expected, (event["id"], answer.text)
        if expected == 400:
            assert answer.json()["error"]["code"] in {"bad_signature", "stale_timestamp"}
    return rejected


def _recorded(stack: Stack, event_ids: list[str]) -> dict[str, int]:
    with transaction(session_factory(stack.engine)) as session:
        rows = session.exec(select(WebhookEvent).where(col(WebhookEvent.event_id).in_(event_ids)))
        found: dict[str, int] = {}
        for row in rows:
            found[row.event_id] = found.get(row.event_id, 0) + 1
        return found


async def _reconciled(client: Client, stack: Stack, payment_id: str) -> bool:
    """Whether the workflow asked the gateway (its webhook deadline passed) before settling."""
    with transaction(session_factory(stack.engine)) as session:
        payment = session.get(Payment, payment_id)
        assert payment is not None
        workflow_id = payment.workflow_id
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return any(
        event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "reconcile_charge"
        for event in history.events
    )


async def test_tripled_shuffled_late_forged_and_replayed_webhooks(
    dev_env: WorkflowEnvironment, sqlite_url: str, fault_table: FaultTable
) -> None:
    """Genuine webhooks settle each payment once, even late; forged and replayed leave no row."""
    async with running_stack(dev_env.client, sqlite_url, webhook_timeout=WEBHOOK_TIMEOUT) as stack:
        started = time.monotonic()
        # The sandbox never answers pm_sandbox_silent charges: only these webhooks settle them.
        created = await asyncio.gather(
            *(stack.pay(payment_method="pm_sandbox_silent") for _ in range(PAYMENTS))
        )
        assert all(r.status_code == 201 for r in created), [r.text for r in created]
        assert {r.json()["status"] for r in created} == {"awaiting_webhook"}
        payment_ids = [r.json()["id"] for r in created]
        outcome = {p: i % 2 == 0 for i, p in enumerate(payment_ids)}
        charges = {
            r.json()["id"]: (
                await stack.sandbox.get(f"/v1/charges/{r.json()['gateway_reference']}")
            )
            .raise_for_status()
            .json()
            for r in created
        }
        prompt = dict(list(charges.items())[: PAYMENTS // 2])
        late = dict(list(charges.items())[PAYMENTS // 2 :])

        rejected = await _deliver(stack, prompt, outcome)
        # Past the webhook deadline twice over: the late half has been reconciled (still pending).
        await asyncio.sleep(2.5 * WEBHOOK_TIMEOUT)
        rejected += await _deliver(stack, late, outcome)

        row, statuses = await measure(
            stack,
            f"webhooks 3x, shuffled, late, forged, replayed; {PAYMENTS} payments",
            payment_ids,
            attempted=PAYMENTS,
            recovery_started=started,
        )
        fault_table.rows.append(row)

        assert row.lost == 0, statuses
        assert row.charged_twice == 0
        assert statuses == {p: "succeeded" if ok else "failed" for p, ok in outcome.items()}
        assert _recorded(stack, rejected) == {}
        assert all([await _reconciled(dev_env.client, stack, p) for p in late])
        for payment_id in payment_ids:
            deliveries = stack.webhook_deliveries(payment_id)
            # One row per genuine event, however often it came; the workflow settled once.
            assert len(deliveries) == 1, deliveries
            assert stack.ledger_statuses(payment_id).count(statuses[payment_id]) == 1
