"""Scenario 6: the ledger database (PostgreSQL) refuses every connection for ten seconds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment

from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.faults.harness import FaultTable, measure
from tests.integration.stack import Stack, running_stack

BEFORE = 10
DURING = 10
OUTAGE_SECONDS = 10.0


@pytest.fixture
def outage_database(postgres_url: str) -> Iterator[str]:
    """A ledger database of its own (``postgres_url`` skips or fails when PostgreSQL is away)."""
    name = f"paytide_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    engine = create_ledger_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _allow_connections(name: str, allowed: bool) -> None:
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def _pay_until_accepted(stack: Stack, key: str) -> str:
    """A client that honours Retry-After: the same key again until the API takes the payment."""
    while True:
        response = await stack.pay(key)
        if response.status_code in (200, 201, 202):
            return str(response.json()["id"])
        assert response.status_code == 503, response.text
        await asyncio.sleep(float(response.headers["Retry-After"]))


async def test_ledger_unreachable_answers_503_and_loses_nothing(
    dev_env: WorkflowEnvironment, outage_database: str, postgres_url: str, fault_table: FaultTable
) -> None:
    """While the ledger is down the API says 503 + Retry-After; every accepted payment completes."""
    url = f"{postgres_url.rsplit('/', 1)[0]}/{outage_database}"
    async with running_stack(dev_env.client, url, sandbox_webhook_delay=1.0) as stack:
        created = await asyncio.gather(*(stack.pay() for _ in range(BEFORE)))
        # 200: a POST sent again after 409 payment_in_progress finds the payment it started.
        assert all(r.status_code in (200, 201, 202) for r in created), [r.text for r in created]
        payment_ids = [r.json()["id"] for r in created]

        refused: dict[str, httpx.Response] = {}
        keys = [uuid.uuid4().hex for _ in range(DURING)]
        try:
            # Payments in flight meet a ledger that is gone: their webhooks and writes must wait.
            await asyncio.to_thread(_allow_connections, outage_database, False)
            ends = time.monotonic() + OUTAGE_SECONDS
            for key in keys:
                response = await stack.pay(key)
                if response.status_code in (201, 202):
                    payment_ids.append(response.json()["id"])
                else:
                    refused[key] = response
                await asyncio.sleep(OUTAGE_SECONDS / DURING / 2)
            await asyncio.sleep(max(0.0, ends - time.monotonic()))
        finally:
            await asyncio.to_thread(_allow_connections, outage_database, True)
        recovered = time.monotonic()
        payment_ids += await asyncio.gather(*(_pay_until_accepted(stack, k) for k in refused))

        row, statuses = await measure(
            stack,
            f"PostgreSQL refuses connections {OUTAGE_SECONDS:.0f} s, {BEFORE + DURING} payments",
            payment_ids,
            attempted=BEFORE + DURING,
            recovery_started=recovered,
        )
        fault_table.rows.append(row)

        assert refused, "the outage should have refused some POSTs"
        for response in refused.values():
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "ledger_unavailable"
            assert response.headers["Retry-After"] == "2"
        assert row.lost == 0, statuses
        assert row.charged_twice == 0
        assert set(statuses.values()) == {"succeeded"}
        assert len(set(payment_ids)) == BEFORE + DURING
