"""Scenario 5: many clients send the same payment at once, for many payments at once.

The copies of each request are spread over two API processes' worth of apps (two uvicorn servers
on one Temporal client): within one app they coalesce, across the two only the workflow id and
Temporal's update-with-start keep them to one payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.faults.harness import FaultTable, measure
from tests.integration.stack import Stack, post_payment, running_stack
from tests.support.serve import serve_api

KEYS = 20
DUPLICATES = 50


async def _storm(
    key: str, body: dict[str, Any], api_urls: list[str], headers: dict[str, str]
) -> Any:
    # A client per API per key: httpx's pool does work per request that grows with its number of
    # connections, and one pool of 1,000 made the test's own client the bottleneck.
    async with contextlib.AsyncExitStack() as clients:
        apis = [
            await clients.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=60, headers=headers)
            )
            for url in api_urls
        ]
        answers = await asyncio.gather(
            *(post_payment(apis[n % len(apis)], body, key) for n in range(DUPLICATES))
        )
    return [(a.status_code, a.json().get("id")) for a in answers]


async def _workflows(stack: Stack, client: Any, within: float = 15) -> Counter[str]:
    """Workflow runs on the stack's task queue, by workflow id (visibility lags a little)."""
    query = f"TaskQueue = '{stack.settings.temporal_task_queue}'"
    async with asyncio.timeout(within):
        while True:
            runs = Counter([w.id async for w in client.list_workflows(query)])
            if sum(runs.values()) >= KEYS:
                return runs
            await asyncio.sleep(0.2)


async def test_concurrent_duplicate_posts_make_one_payment_per_key(
    dev_env: WorkflowEnvironment, sqlite_url: str, fault_table: FaultTable
) -> None:
    """K keys x M simultaneous POSTs: K workflows, K charges, one payment id per key."""
    async with (
        running_stack(dev_env.client, sqlite_url) as stack,
        serve_api(
            create_app(stack.settings, temporal=dev_env.client), stack.settings
        ) as second_api,
    ):
        api_urls = [stack.settings.effective_api_url, second_api]
        keys = {uuid.uuid4().hex: i for i in range(KEYS)}
        bodies = {
            key: {
                "amount": 1000 + i,
                "currency": "USD",
                "customer_id": f"cus_storm_{i}",
                "payment_method": "pm_sandbox_ok",
                "order_id": f"order_storm_{key[:8]}",
            }
            for key, i in keys.items()
        }
        started = time.monotonic()
        storms = await asyncio.gather(
            *(_storm(k, bodies[k], api_urls, stack.auth_headers) for k in keys)
        )
        answered = time.monotonic()

        ids: dict[str, set[str]] = {}
        for key, answers in zip(keys, storms, strict=True):
            assert {status for status, _ in answers} <= {200, 201, 202}, answers
            assert sum(1 for status, _ in answers if status == 201) <= 1, answers
            ids[key] = {payment_id for _, payment_id in answers}
        payment_ids = [next(iter(found)) for found in ids.values()]

        row, statuses = await measure(
            stack,
            f"{KEYS} keys x {DUPLICATES} concurrent duplicate POSTs",
            payment_ids,
            attempted=KEYS,
            recovery_started=started,
        )
        fault_table.rows.append(row)

        assert all(len(found) == 1 for found in ids.values()), ids
        assert row.lost == 0, statuses
        assert row.charged_twice == 0
        assert set(statuses.values()) == {"succeeded"}
        stats = (await stack.sandbox.get("/v1/stats")).json()
        assert sorted(stats["charges_by_reference"]) == sorted(payment_ids)
        runs = await _workflows(stack, dev_env.client)
        assert len(runs) == KEYS and set(runs.values()) == {1}, runs
        print(f"duplicate storm answered in {answered - started:.1f} s")
