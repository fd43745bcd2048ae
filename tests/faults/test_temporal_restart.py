"""Scenario 2: the Temporal server restarts (same SQLite file) while payments await webhooks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.faults.harness import FaultTable, TemporalServer, measure, worker_process
from tests.integration.stack import running_stack

PAYMENTS = 100


async def test_temporal_restart_with_payments_in_flight(
    sqlite_url: str, tmp_path: Path, fault_table: FaultTable
) -> None:
    """Payments in flight when Temporal is stopped all succeed after it restarts, charged once."""
    server = TemporalServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    server.start()
    try:
        client = await server.connect()
        # Webhooks come 2 s after each charge: the server is down when the sandbox sends them.
        async with running_stack(
            client, sqlite_url, in_process_worker=False, sandbox_webhook_delay=2.0
        ) as stack:
            log = tmp_path / "worker.log"
            with worker_process(stack.settings, log):
                created = await asyncio.gather(*(stack.pay() for _ in range(PAYMENTS)))
                # 200: a POST sent again after 409 payment_in_progress finds the payment it started.
                assert all(r.status_code in (200, 201, 202) for r in created), [
                    r.text for r in created
                ]
                payment_ids = [r.json()["id"] for r in created]
                in_flight = [r.json()["status"] for r in created]
                server.stop()
                server.start()
                restarted = time.monotonic()
                await server.wait_ready(client)
                row, statuses = await measure(
                    stack,
                    f"Temporal restart, {PAYMENTS} in flight",
                    payment_ids,
                    attempted=PAYMENTS,
                    recovery_started=restarted,
                )
            fault_table.rows.append(row)

            assert "succeeded" not in in_flight, "the restart should meet payments mid-flight"
            assert row.lost == 0, (statuses, log.read_text()[-3000:])
            assert row.charged_twice == 0
            assert set(statuses.values()) == {"succeeded"}
            for payment_id in payment_ids:
                assert stack.ledger_statuses(payment_id).count("succeeded") == 1
    finally:
        server.stop()
