"""The ``temporal`` commands of docs/operations.md "Runbook: situations", run as an operator types
them against a real stack: the ``reconcile_now``, ``cancel`` and ``retry_notification`` updates,
``stack``, ``show``, ``reset`` (one payment, and a batch by query) and ``terminate``.

``tests/integration/test_operator_cli.py`` covers ``list``, ``describe``, ``query`` and
``signal``; its helpers run the real binary here too. Every paytide part connects through
``paytide.temporal.connect``, so histories are encrypted exactly as in production and the
commands that print payloads are given the API's ``/codec`` endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ledger.engine import session_factory, transaction
from ledger.models import Notification, Payment, PaymentEvent
from paytide.settings import Settings
from paytide.temporal import connect
from tests.integration.stack import Stack, running_stack
from tests.integration.test_operator_cli import Ran, silent_payment, temporal


@pytest.fixture
async def codec_client(dev_env: WorkflowEnvironment) -> Client:
    """A client made like the API's and the worker's: with the payload codec."""
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
    )
    return await connect(settings)


@pytest.fixture
async def stack(codec_client: Client, sqlite_url: str) -> AsyncIterator[Stack]:
    # A long webhook deadline: a silent payment waits until the operator acts.
    async with running_stack(codec_client, sqlite_url, webhook_timeout=600.0) as running:
        yield running


def codec(stack: Stack) -> list[str]:
    return ["--codec-endpoint", f"{stack.settings.effective_api_url}/codec"]


def succeeded(ran: Ran) -> Ran:
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran


async def describe(dev_env: WorkflowEnvironment, workflow_id: str) -> dict[str, Any]:
    ran = succeeded(
        await temporal(dev_env, "workflow", "describe", "-w", workflow_id, "--output", "json")
    )
    info: dict[str, Any] = json.loads(ran.stdout)["workflowExecutionInfo"]
    return info


def ledger_events(stack: Stack, payment_id: str) -> list[PaymentEvent]:
    with transaction(session_factory(stack.engine)) as session:
        query = select(PaymentEvent).where(PaymentEvent.payment_id == payment_id)
        return list(session.exec(query.order_by(PaymentEvent.seq)))


def ledger_status(stack: Stack, payment_id: str) -> str:
    with transaction(session_factory(stack.engine)) as session:
        row = session.get(Payment, payment_id)
        assert row is not None
        return row.status


async def api_status(stack: Stack, payment_id: str, wanted: str, within: float = 30) -> str:
    async with asyncio.timeout(within):
        while True:
            response = await stack.api.get(f"/payments/{payment_id}")
            assert response.status_code == 200, response.text
            status: str = response.json()["status"]
            if status == wanted:
                return status
            await asyncio.sleep(0.1)


def gateway_event_input(payment: dict[str, Any]) -> str:
    """The signal input an operator pastes after confirming the charge at the gateway."""
    return json.dumps(
        {
            "provider": "sandbox",
            "event_id": f"evt_manual_{uuid.uuid4().hex[:8]}",
            "event_type": "charge.succeeded",
            "state": "succeeded",
            "gateway_reference": payment["gateway_reference"],
            "amount_minor": payment["amount"],
            "currency": payment["currency"],
        }
    )


async def test_reconcile_now_update_records_the_operator_and_reason(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``update execute --name reconcile_now`` writes "reconcile_now by ops: runbook" to the
    ledger and prints the decoded PaymentView through the codec endpoint."""
    payment = await silent_payment(stack)

    ran = succeeded(
        await temporal(
            dev_env,
            "workflow",
            "update",
            "execute",
            "-w",
            payment["workflow_id"],
            "--name",
            "reconcile_now",
            "--input",
            '{"operator": "ops", "reason": "runbook"}',
            "--output",
            "json",
            *codec(stack),
        )
    )

    view = json.loads(ran.stdout)["result"]
    assert view["payment_id"] == payment["id"]
    assert view["status"] == "awaiting_webhook"  # the silent gateway still has no final word
    reasons = [event.reason for event in ledger_events(stack, payment["id"])]
    assert "reconcile_now by ops: runbook" in reasons


async def test_cancel_update_with_plain_input_cancels_the_payment(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``update execute --name cancel`` cancels the payment; without ``--codec-endpoint`` the
    plain JSON input still reaches the workflow, but the CLI cannot read the encrypted result
    and exits 1 although the cancel was done. A second cancel is refused: by the workflow while
    it still finishes (the merchant's notification pending), by the server once it has closed;
    the API answers both the same."""
    payment = await silent_payment(stack)
    stack.merchant.answering.clear()  # the notification of the cancel stalls until released

    def cancel(*codec_flags: str) -> Awaitable[Ran]:
        return temporal(
            dev_env,
            "workflow",
            "update",
            "execute",
            "-w",
            payment["workflow_id"],
            "--name",
            "cancel",
            "--input",
            '{"reason": "runbook"}',
            *codec_flags,
        )

    ran = await cancel()

    assert ran.returncode == 1
    assert "encoding binary/encrypted: payload encoding is not supported" in ran.stderr
    assert await api_status(stack, payment["id"], "canceled") == "canceled"
    assert ledger_events(stack, payment["id"])[-1].status == "canceled"

    # The ledger is final; the workflow is still notifying the merchant: its validator refuses.
    while_finishing = await cancel(*codec(stack))
    api_while_finishing = await stack.api.post(f"/payments/{payment['id']}/cancel")
    assert while_finishing.returncode == 1
    assert "payment is canceled; only a payment that is not yet captured or final" in (
        while_finishing.stderr
    )

    # Once the workflow has closed, the server refuses any update.
    stack.merchant.answering.set()
    async with asyncio.timeout(30):
        while (await describe(dev_env, payment["workflow_id"]))["status"] != (
            "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        ):
            await asyncio.sleep(0.2)
    closed = await cancel(*codec(stack))
    api_closed = await stack.api.post(f"/payments/{payment['id']}/cancel")
    assert closed.returncode == 1
    assert "workflow execution already completed" in closed.stderr

    for answer in (api_while_finishing, api_closed):
        assert answer.status_code == 409
        assert answer.json()["error"]["message"] == "payment has ended: it is canceled"


async def test_stack_answers_for_a_waiting_payment(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``workflow stack`` with the codec endpoint prints the live tasks of the payment's run
    (the Python SDK shows each task's outer frame only); without it, the answer is ciphertext."""
    payment = await silent_payment(stack)
    workflow_id = payment["workflow_id"]

    decoded = succeeded(
        await temporal(dev_env, "workflow", "stack", "-w", workflow_id, *codec(stack))
    )
    raw = succeeded(await temporal(dev_env, "workflow", "stack", "-w", workflow_id))

    assert f"Stack for <Task pending name='run (workflow: PaymentWorkflow, id: {workflow_id}" in (
        decoded.stdout.replace("\\u003c", "<")
    )
    assert "_run_top_level_workflow_function" in decoded.stdout
    assert "YmluYXJ5L2VuY3J5cHRlZA==" in raw.stdout  # base64 of "binary/encrypted"
    assert "Stack for" not in raw.stdout


async def test_show_json_is_the_encrypted_history(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``workflow show --output json`` starts with WORKFLOW_EXECUTION_STARTED, and without a
    codec its input payload is ``binary/encrypted``; with one, the input reads in clear."""
    payment = await silent_payment(stack)

    raw = succeeded(
        await temporal(
            dev_env, "workflow", "show", "-w", payment["workflow_id"], "--output", "json"
        )
    )
    decoded = succeeded(
        await temporal(
            dev_env,
            "workflow",
            "show",
            "-w",
            payment["workflow_id"],
            "--output",
            "json",
            *codec(stack),
        )
    )

    events = json.loads(raw.stdout)["events"]
    assert events[0]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
    started = events[0]["workflowExecutionStartedEventAttributes"]
    (sealed,) = started["input"]["payloads"]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    assert payment["customer_id"] not in raw.stdout
    clear = json.loads(decoded.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
    (opened,) = clear["input"]["payloads"]
    assert base64.b64decode(opened["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(opened["data"]))["request"]["payment_id"] == payment["id"]


async def test_reset_to_last_workflow_task_keeps_one_charge(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``workflow reset --type LastWorkflowTask`` starts a new run of a waiting payment; it still
    settles on the hand-sent gateway_event, with exactly one sandbox charge."""
    payment = await silent_payment(stack)
    workflow_id = payment["workflow_id"]
    before = (await describe(dev_env, workflow_id))["execution"]["runId"]

    ran = succeeded(
        await temporal(
            dev_env,
            "workflow",
            "reset",
            "-w",
            workflow_id,
            "--type",
            "LastWorkflowTask",
            "--reason",
            "runbook",
            "--yes",
        )
    )

    after = await describe(dev_env, workflow_id)
    assert after["execution"]["runId"] != before
    assert after["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
    assert "Resetting workflow" in ran.stdout
    old = succeeded(
        await temporal(
            dev_env, "workflow", "describe", "-w", workflow_id, "-r", before, "-o", "json"
        )
    )
    assert json.loads(old.stdout)["workflowExecutionInfo"]["status"] == (
        "WORKFLOW_EXECUTION_STATUS_TERMINATED"
    )

    succeeded(
        await temporal(
            dev_env,
            "workflow",
            "signal",
            "-w",
            workflow_id,
            "--name",
            "gateway_event",
            "--input",
            gateway_event_input(payment),
        )
    )
    final = await stack.wait_final(payment["id"])
    assert final["status"] == "succeeded"
    assert await stack.charges_for(payment["id"]) == 1


async def test_batch_reset_by_query_resets_the_matching_payments(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``workflow reset --query ... --type LastWorkflowTask --yes`` runs a batch job that gives
    every matching payment a new run; the payment keeps waiting with its one charge."""
    payment = await silent_payment(stack)
    workflow_id = payment["workflow_id"]
    before = (await describe(dev_env, workflow_id))["execution"]["runId"]

    batch = succeeded(
        await temporal(
            dev_env,
            "workflow",
            "reset",
            "--query",
            f"WorkflowId='{workflow_id}' AND PaymentStatus='awaiting_webhook'",
            "--type",
            "LastWorkflowTask",
            "--reason",
            "runbook batch",
            "--yes",
        )
    )

    assert "Started batch for job ID: " in batch.stdout
    job_id = batch.stdout.split("Started batch for job ID: ")[1].split()[0]
    # The batch runs on the server after the command returns.
    async with asyncio.timeout(30):
        while (await describe(dev_env, workflow_id))["execution"]["runId"] == before:
            await asyncio.sleep(0.3)
    async with asyncio.timeout(30):
        while True:
            job = succeeded(
                await temporal(dev_env, "batch", "describe", "--job-id", job_id, "-o", "json")
            )
            described_job = json.loads(job.stdout)
            if described_job["state"] == "BATCH_OPERATION_STATE_COMPLETED":
                break
            await asyncio.sleep(0.3)
    assert described_job["operationType"] == "BATCH_OPERATION_TYPE_RESET_WORKFLOW"
    assert described_job["completeOperationCount"] == "1"
    assert ledger_status(stack, payment["id"]) == "awaiting_webhook"
    assert await stack.charges_for(payment["id"]) == 1


async def test_terminate_closes_the_workflow_and_leaves_the_ledger_behind(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """``workflow terminate -w`` closes the payment as TERMINATED without telling the
    workflow, so its ledger row stays at ``awaiting_webhook`` (why the runbook prefers cancel);
    ``--yes`` is refused together with ``-w``."""
    payment = await silent_payment(stack)
    workflow_id = payment["workflow_id"]

    refused = await temporal(
        dev_env, "workflow", "terminate", "-w", workflow_id, "--reason", "runbook", "--yes"
    )
    assert refused.returncode == 1
    assert "cannot set 'yes' when workflow ID is set" in refused.stderr

    succeeded(
        await temporal(dev_env, "workflow", "terminate", "-w", workflow_id, "--reason", "runbook")
    )

    assert (await describe(dev_env, workflow_id))["status"] == (
        "WORKFLOW_EXECUTION_STATUS_TERMINATED"
    )
    await asyncio.sleep(0.5)  # nothing more is written: give a stray write the chance to show
    assert ledger_status(stack, payment["id"]) == "awaiting_webhook"
    assert ledger_events(stack, payment["id"])[-1].status == "awaiting_webhook"
    assert (await stack.api.get(f"/payments/{payment['id']}")).json()["status"] == (
        "awaiting_webhook"
    )


async def test_retry_notification_redrives_a_failed_final_notification(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """A final notification that exhausted its retries leaves the payment Running and the
    ledger row ``failed``; ``update execute --name retry_notification`` delivers it."""
    stack.merchant.fail_first = 5  # every try of the one notification fails
    created = await stack.pay(payment_method="pm_sandbox_ok")
    payment_id = created.json()["id"]
    with transaction(session_factory(stack.engine)) as session:
        row = session.get(Payment, payment_id)
        assert row is not None
        workflow_id = row.workflow_id

    def notification_status() -> str | None:
        with transaction(session_factory(stack.engine)) as session:
            found = session.exec(
                select(Notification).where(Notification.payment_id == payment_id)
            ).first()
            return found.status if found else None

    async with asyncio.timeout(40):  # five tries, 1+2+4+8 s apart
        while notification_status() != "failed":
            await asyncio.sleep(0.3)
    async with asyncio.timeout(20):
        while True:
            listed = succeeded(
                await temporal(
                    dev_env,
                    "workflow",
                    "list",
                    "--query",
                    f"ExecutionStatus='Running' AND PaymentStatus='succeeded' "
                    f"AND WorkflowId='{workflow_id}'",
                )
            )
            if workflow_id in listed.stdout:
                break
            await asyncio.sleep(0.3)

    ran = succeeded(
        await temporal(
            dev_env,
            "workflow",
            "update",
            "execute",
            "-w",
            workflow_id,
            "--name",
            "retry_notification",
            "--input",
            '{"operator": "ops", "reason": "merchant endpoint fixed"}',
            "--output",
            "json",
            *codec(stack),
        )
    )

    assert json.loads(ran.stdout)["result"]["status"] == "succeeded"
    assert notification_status() == "delivered"
    reasons = [event.reason for event in ledger_events(stack, payment_id)]
    assert "retry_notification by ops: merchant endpoint fixed" in reasons
    async with asyncio.timeout(20):
        while (await describe(dev_env, workflow_id))["status"] != (
            "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        ):
            await asyncio.sleep(0.3)
