"""The operator's tools against a real stack: ``paytide stuck | reconcile | replay`` and the
``temporal`` CLI commands the runbook tells operators to type.

Every paytide part here connects the way production does (``paytide.temporal.connect``, with the
payload codec), so the commands see what an operator would see.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ledger.engine import session_factory, transaction
from ledger.models import Payment
from paytide.binaries import temporal_cli
from paytide.operator import OperatorError, format_age, parse_duration
from paytide.settings import Settings
from paytide.temporal import connect
from tests.integration.stack import Stack, running_stack, subprocess_env
from workflows.contract import ChargeState, GatewayEvent, GatewayName


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def run(*argv: str, env: dict[str, str] | None = None, within: float = 90) -> Ran:
    """Run a command without blocking the event loop: the worker and API of the stack live in it."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(within):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def paytide(stack: Stack, *args: str) -> Ran:
    return await run(sys.executable, "-m", "paytide", *args, env=subprocess_env(stack.settings))


async def temporal(dev_env: WorkflowEnvironment, *args: str) -> Ran:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    address = dev_env.client.service_client.config.target_host
    return await run(
        str(temporal_cli()),
        *args,
        "--address",
        address,
        "--namespace",
        dev_env.client.namespace,
        env=env,
    )


@pytest.fixture
async def paytide_client(dev_env: WorkflowEnvironment) -> Client:
    """A client to the dev server made like the API's and the worker's: with the payload codec."""
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
    )
    return await connect(settings)


@pytest.fixture
async def stack(paytide_client: Client, database_url: str) -> AsyncIterator[Stack]:
    # A long webhook deadline: the silent payment waits, and only the operator reconciles it.
    async with running_stack(paytide_client, database_url, webhook_timeout=600.0) as running:
        yield running


async def silent_payment(stack: Stack) -> dict[str, Any]:
    """A sandbox payment whose gateway never sends a webhook: it stays awaiting_webhook."""
    created = await stack.pay(payment_method="pm_sandbox_silent")
    assert created.status_code == 201, created.text
    payment: dict[str, Any] = created.json()
    assert payment["status"] == "awaiting_webhook"
    with transaction(session_factory(stack.engine)) as session:
        row = session.get(Payment, payment["id"])
        assert row is not None
        payment["workflow_id"] = row.workflow_id
    return payment


async def test_stuck_lists_reconcile_reconciles_and_replay_replays(stack: Stack) -> None:
    """A silent payment shows in ``stuck``, ``reconcile`` by payment id records the operator's
    request in the ledger, and ``replay --workflow-id`` replays its history deterministically."""
    payment = await silent_payment(stack)
    workflow_id = payment["workflow_id"]

    # Visibility is eventually consistent: the new payment shows within a moment.
    async with asyncio.timeout(20):
        while True:
            stuck = await paytide(stack, "stuck", "--older-than", "0s", "--json")
            assert stuck.returncode == 0, stuck.stderr
            listed = {row["workflow_id"]: row for row in json.loads(stuck.stdout)}
            if workflow_id in listed:
                break
            await asyncio.sleep(0.3)
    assert listed[workflow_id]["status"] == "awaiting_webhook"
    assert listed[workflow_id]["gateway"] == "sandbox"
    assert (listed[workflow_id]["amount_minor"], listed[workflow_id]["currency"]) == (1999, "USD")
    table = await paytide(stack, "stuck", "--older-than", "0s")
    assert workflow_id in table.stdout and "19.99 USD" in table.stdout
    none_yet = await paytide(stack, "stuck", "--older-than", "1d")
    assert workflow_id not in none_yet.stdout

    reconciled = await paytide(
        stack, "reconcile", payment["id"], "--operator", "ana", "--reason", "customer called"
    )
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert f"{payment['id']} is awaiting_webhook" in reconciled.stdout
    assert "1 reconciled, 0 failed" in reconciled.stdout
    assert "1/1" in reconciled.stderr  # the progress bar
    with transaction(session_factory(stack.engine)) as session:
        from ledger import payments as ledger

        reasons = [event.reason for event in ledger.list_events(session, payment["id"])]
    assert "reconcile_now by ana: customer called" in reasons

    unknown = await paytide(stack, "reconcile", "pay_doesnotexist", workflow_id)
    assert unknown.returncode == 1
    assert "pay_doesnotexist: no such payment in the ledger" in unknown.stdout
    assert "1 reconciled, 1 failed" in unknown.stdout

    replayed = await paytide(stack, "replay", "--workflow-id", workflow_id)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "1 histories replayed, all deterministic" in replayed.stdout


async def test_reconcile_refuses_a_finished_payment_with_the_workflows_reason(
    stack: Stack,
) -> None:
    """A payment that already succeeded is not reconciled; the summary gives the reason."""
    created = await stack.pay(payment_method="pm_sandbox_ok")
    final = await stack.wait_final(created.json()["id"])
    assert final["status"] == "succeeded"

    refused = await paytide(stack, "reconcile", final["id"])

    assert refused.returncode == 1
    assert "FAILED" in refused.stdout
    assert "payment has ended: it is succeeded; nothing to reconcile" in refused.stdout


async def test_reconcile_answers_alike_while_a_payment_finishes_and_once_it_has_closed(
    stack: Stack, paytide_client: Client
) -> None:
    """``reconcile`` of a succeeded payment says "payment has ended: it is succeeded" both while
    its workflow still finishes (the merchant's notification pending) and after it closed."""
    stack.merchant.answering.clear()  # the final notification stalls: the workflow stays open
    created = await stack.pay(payment_method="pm_sandbox_ok")
    final = await stack.wait_final(created.json()["id"])
    assert final["status"] == "succeeded"

    while_finishing = await paytide(stack, "reconcile", final["id"])
    stack.merchant.answering.set()
    with transaction(session_factory(stack.engine)) as session:
        row = session.get(Payment, final["id"])
        assert row is not None
    await paytide_client.get_workflow_handle(row.workflow_id).result()  # closed
    after_closing = await paytide(stack, "reconcile", final["id"])

    line = (
        f"FAILED      {final['id']} ({row.workflow_id}): "
        "payment has ended: it is succeeded; nothing to reconcile"
    )
    for ran in (while_finishing, after_closing):
        assert ran.returncode == 1
        assert line in ran.stdout.splitlines(), ran.stdout
    assert while_finishing.stdout == after_closing.stdout


async def test_operator_commands_explain_bad_input(stack: Stack) -> None:
    """Bad durations and missing targets exit 2 with a sentence and no traceback."""
    bad_duration = await paytide(stack, "stuck", "--older-than", "soon")
    nothing = await paytide(stack, "reconcile")
    no_source = await paytide(stack, "replay")

    for ran in (bad_duration, nothing, no_source):
        assert ran.returncode == 2
        assert "Traceback" not in ran.stderr
    assert "is not a duration" in bad_duration.stderr
    assert "--stuck-for" in nothing.stderr
    assert "--workflow-id" in no_source.stderr


def test_durations_accept_the_documented_forms() -> None:
    """45s, 30m, 2h, 1d and sums like 1h30m parse; anything else is refused with an example."""
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("0s") == timedelta(0)
    for bad in ("", "30", "m", "1.5h", "-1m", "30 minutes", "1w"):
        with pytest.raises(OperatorError, match="for example 45s, 30m"):
            parse_duration(bad)
    assert format_age(timedelta(days=3, hours=4, minutes=5)) == "3d4h"
    assert format_age(timedelta(seconds=9)) == "9s"


async def test_temporal_cli_runbook_commands(
    dev_env: WorkflowEnvironment, paytide_client: Client, sqlite_url: str
) -> None:
    """list by PaymentStatus, describe, query status (decoded through the API's codec
    endpoint) and a hand-sent gateway_event signal that settles a silent payment."""
    async with running_stack(paytide_client, sqlite_url, webhook_timeout=600.0) as stack:
        payment = await silent_payment(stack)
        workflow_id = payment["workflow_id"]

        async with asyncio.timeout(20):
            while True:
                listed = await temporal(
                    dev_env,
                    "workflow",
                    "list",
                    "--query",
                    f"PaymentStatus='awaiting_webhook' AND WorkflowId='{workflow_id}'",
                    "--output",
                    "json",
                )
                assert listed.returncode == 0, listed.stderr
                if workflow_id in listed.stdout:
                    break
                await asyncio.sleep(0.3)

        described = await temporal(
            dev_env, "workflow", "describe", "-w", workflow_id, "--output", "json"
        )
        assert described.returncode == 0, described.stderr
        info = json.loads(described.stdout)["workflowExecutionInfo"]
        assert info["type"]["name"] == "PaymentWorkflow"
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        status = info["searchAttributes"]["indexedFields"]["PaymentStatus"]
        assert json.loads(base64.b64decode(status["data"])) == "awaiting_webhook"

        codec = f"{stack.settings.effective_api_url}/codec"
        queried = await temporal(
            dev_env,
            "workflow",
            "query",
            "-w",
            workflow_id,
            "--type",
            "status",
            "--output",
            "json",
            "--codec-endpoint",
            codec,
        )
        assert queried.returncode == 0, queried.stderr
        view = json.loads(queried.stdout)["queryResult"][0]
        assert view["status"] == "awaiting_webhook"
        assert view["gateway_reference"] == payment["gateway_reference"]

        # What an operator pastes after confirming the charge in the gateway's dashboard.
        gateway_event = GatewayEvent(
            provider=GatewayName.SANDBOX,
            event_id=f"evt_manual_{uuid.uuid4().hex[:8]}",
            event_type="charge.succeeded",
            state=ChargeState.SUCCEEDED,
            gateway_reference=payment["gateway_reference"],
            amount_minor=payment["amount"],
            currency=payment["currency"],
        )
        signalled = await temporal(
            dev_env,
            "workflow",
            "signal",
            "-w",
            workflow_id,
            "--name",
            "gateway_event",
            "--input",
            json.dumps(
                {
                    "provider": gateway_event.provider.value,
                    "event_id": gateway_event.event_id,
                    "event_type": gateway_event.event_type,
                    "state": gateway_event.state.value,
                    "gateway_reference": gateway_event.gateway_reference,
                    "amount_minor": gateway_event.amount_minor,
                    "currency": gateway_event.currency,
                }
            ),
        )
        assert signalled.returncode == 0, signalled.stderr

        final = await stack.wait_final(payment["id"])
        assert final["status"] == "succeeded"
        assert stack.ledger_statuses(payment["id"])[-1] == "succeeded"
