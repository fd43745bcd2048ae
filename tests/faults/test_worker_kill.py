"""Scenario 1: the worker is SIGKILLed after the gateway took the charges, before the ledger."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.faults.harness import FaultTable, codec_client, measure, worker_process
from tests.integration.stack import Stack, running_stack

PAYMENTS = 5


async def _charged(stack: Stack, payment_ids: list[str]) -> None:
    async with asyncio.timeout(30):
        while not all([await stack.charges_for(p) for p in payment_ids]):
            await asyncio.sleep(0.02)


async def test_worker_sigkill_between_gateway_call_and_ledger_write(
    dev_env: WorkflowEnvironment, sqlite_url: str, tmp_path: Path, fault_table: FaultTable
) -> None:
    """Payments whose charge the gateway holds when the worker dies finish once, charged once."""
    client = await codec_client(
        dev_env.client.service_client.config.target_host, dev_env.client.namespace
    )
    async with running_stack(
        client,
        sqlite_url,
        in_process_worker=False,
        initiate_wait=0.5,
        sandbox_slow_delay=3.0,
        gateway_call_timeout=5.0,
    ) as stack:
        log = tmp_path / "worker.log"
        with worker_process(stack.settings, log) as first:
            created = await asyncio.gather(
                *(stack.pay(payment_method="pm_sandbox_slow") for _ in range(PAYMENTS))
            )
            # 200: a POST sent again after 409 payment_in_progress finds the payment it started.
            assert all(r.status_code in (200, 201, 202) for r in created), [r.text for r in created]
            payment_ids = [r.json()["id"] for r in created]
            # The sandbox made every charge and holds its answers for 3 s: kill the worker now.
            await _charged(stack, payment_ids)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL

        restarted = time.monotonic()
        with worker_process(stack.settings, log):
            row, statuses = await measure(
                stack,
                f"worker SIGKILL after the charge, {PAYMENTS} in flight",
                payment_ids,
                attempted=PAYMENTS,
                recovery_started=restarted,
            )
        fault_table.rows.append(row)

        assert row.lost == 0, (statuses, log.read_text()[-3000:])
        assert row.charged_twice == 0
        assert set(statuses.values()) == {"succeeded"}
        for payment_id in payment_ids:
            assert await stack.charges_for(payment_id) == 1
            assert stack.ledger_statuses(payment_id).count("succeeded") == 1
