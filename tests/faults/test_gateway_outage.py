"""Scenario 3: the gateway answers 503 to every charge for 30 s, then recovers."""

from __future__ import annotations

import asyncio
import time

from temporalio.testing import WorkflowEnvironment

from tests.faults.harness import FaultTable, measure
from tests.integration.stack import running_stack

PAYMENTS = 20
OUTAGE_SECONDS = 30.0


async def test_gateway_5xx_window_is_ridden_out_with_backoff(
    dev_env: WorkflowEnvironment, sqlite_url: str, fault_table: FaultTable
) -> None:
    """Charges refused with 503 for a window are retried with backoff and complete, once each."""
    # Activity retries wait 1, 2, 4, 8 s ...: eight attempts outlast the window many times over.
    async with running_stack(
        dev_env.client, sqlite_url, gateway_max_attempts=8, initiate_wait=1.0
    ) as stack:
        outage = await stack.sandbox.post("/v1/_test/outage", json={"seconds": OUTAGE_SECONDS})
        assert outage.status_code == 200, outage.text
        ends = time.monotonic() + outage.json()["outage_seconds_remaining"]
        created = await asyncio.gather(*(stack.pay() for _ in range(PAYMENTS)))
        # 200: a POST sent again after 409 payment_in_progress finds the payment it started.
        assert all(r.status_code in (200, 201, 202) for r in created), [r.text for r in created]
        # Nothing was charged while the gateway was down.
        assert (await stack.sandbox.get("/v1/stats")).json()["charges_by_reference"] == {}

        row, statuses = await measure(
            stack,
            f"gateway 503 for {OUTAGE_SECONDS:.0f} s, {PAYMENTS} payments",
            [r.json()["id"] for r in created],
            attempted=PAYMENTS,
            recovery_started=ends,
        )
        fault_table.rows.append(row)

        assert row.lost == 0, statuses
        assert row.charged_twice == 0
        assert set(statuses.values()) == {"succeeded"}
        stats = (await stack.sandbox.get("/v1/stats")).json()
        assert sorted(stats["charges_by_reference"]) == sorted(statuses)
