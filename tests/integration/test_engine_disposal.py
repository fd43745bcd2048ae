"""A ledger connection still in use when its engine is disposed is closed when it comes back.

The clean-clone CI run failed on ``ResourceWarning: <psycopg.Connection …> was deleted while still
open``: a ledger write of an activity cancelled as the worker stopped (run by ``asyncio.to_thread``,
which the worker's shutdown does not wait for) returned its connection after the engine had been
disposed, to the discarded pool, where it stayed open until garbage collected.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from typing import Any

import psycopg
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from ledger.engine import create_ledger_engine
from tests.conftest import POSTGRES_ADMIN_DSN, _fresh_postgres
from tests.integration.stack import running_stack


def is_closed(dbapi_connection: Any) -> bool:
    if isinstance(dbapi_connection, sqlite3.Connection):
        try:
            dbapi_connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            return True
        return False
    closed: bool = dbapi_connection.closed
    return closed


def test_a_connection_returned_after_dispose_is_closed(database_url: str) -> None:
    """A connection checked out across ``dispose()`` is closed when returned; the engine's new
    pool keeps pooling its own connections."""
    engine = create_ledger_engine(database_url)
    in_use = engine.connect()
    in_use.execute(text("SELECT 1"))
    dbapi_connection = in_use.connection.dbapi_connection

    engine.dispose()
    in_use.close()

    assert is_closed(dbapi_connection)
    with engine.connect() as again:
        pooled = again.connection.dbapi_connection
    with engine.connect() as reused:
        assert reused.connection.dbapi_connection is pooled
    assert not is_closed(pooled)
    engine.dispose()
    assert is_closed(pooled)


def _backends(database: str, but: int) -> list[tuple[str, str]]:
    """(state, wait event type) of each connection to ``database`` but the one of pid ``but``."""
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT state, coalesce(wait_event_type, '') FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> %s",
            (database, but),
        ).fetchall()
    return [(str(state), str(wait)) for state, wait in rows]


async def test_a_ledger_write_that_outlives_the_worker_leaks_no_connection(
    dev_env: WorkflowEnvironment,
) -> None:
    """A notification's ledger write blocked while the stack stops finishes afterwards and its
    connection is closed, not left open in the disposed pool (PostgreSQL)."""
    with _fresh_postgres() as url:
        database = url.rsplit("/", 1)[1]
        locker = await psycopg.AsyncConnection.connect(url.replace("+psycopg", ""))
        others = (database, locker.info.backend_pid)
        try:
            async with running_stack(dev_env.client, url) as stack:
                await locker.execute("BEGIN")
                # Writes to the notifications table wait; reads go on.
                await locker.execute("LOCK TABLE notifications IN EXCLUSIVE MODE")
                created = await stack.pay(payment_method="pm_sandbox_instant")
                assert created.status_code == 201, created.text
                await stack.merchant.wait_for(
                    lambda w: w.json()["data"]["id"] == created.json()["id"]
                )
                async with asyncio.timeout(20):  # the write has its connection and waits
                    while ("active", "Lock") not in await asyncio.to_thread(_backends, *others):
                        await asyncio.sleep(0.05)
            # The stack has stopped: the worker, its engine disposed. Let the write finish.
            await locker.execute("COMMIT")
            async with asyncio.timeout(20):
                while await asyncio.to_thread(_backends, *others):
                    await asyncio.sleep(0.05)
        finally:
            await locker.close()
        gc.collect()  # before the fix: psycopg's ResourceWarning, an error in this suite
