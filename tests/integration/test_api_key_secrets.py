"""API key secrets stay out of the three places that outlive a request: the logs of a real API
process, the ledger (both databases), and the Temporal history of a payment made with the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy import Engine, MetaData, select
from temporalio.api.common.v1 import Payload
from temporalio.testing import WorkflowEnvironment

from api.idempotency import workflow_id
from ledger import merchants
from ledger.engine import create_ledger_engine, session_factory, transaction
from paytide.api_keys import KeyMode
from tests.integration.stack import Stack, bearer, issue_api_key, running_stack
from tests.support.ports import free_port


def secret_of(api_key: str) -> str:
    return api_key.rsplit("_", 1)[1]


@contextmanager
def api_process(database_url: str, log: Path) -> Iterator[str]:
    """`paytide api` as its own process, logging JSON at DEBUG into ``log``; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    env.update(
        {
            "PAYTIDE_DATABASE_URL": database_url,
            "PAYTIDE_API_PORT": str(port),
            # Nothing listens there: these requests stop at authentication or the ledger.
            "PAYTIDE_TEMPORAL_ADDRESS": "127.0.0.1:1",
            "PAYTIDE_LOG_FORMAT": "json",
            "PAYTIDE_LOG_LEVEL": "DEBUG",
            "PAYTIDE_API_KEY_CACHE_SECONDS": "0",
        }
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paytide", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def _all_rows_as_text(engine: Engine) -> str:
    """Every value of every table of the ledger, as one string."""
    tables = MetaData()
    tables.reflect(engine)
    parts: list[str] = []
    with engine.connect() as connection:
        for table in tables.sorted_tables:
            for row in connection.execute(select(table)):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


def test_api_logs_never_carry_a_key_secret(database_url: str, tmp_path: Path) -> None:
    """A real API process logging at DEBUG, sent a good key, a wrong secret for a real key id, a
    revoked key and a key in the wrong scheme, logs the rejections by prefix and no secret."""
    engine = create_ledger_engine(database_url)
    try:
        good = issue_api_key(engine, "mer-logs")
        revoked = issue_api_key(engine, "mer-logs")
        with transaction(session_factory(engine)) as session:
            merchants.revoke_key(session, revoked.rsplit("_", 1)[0])
    finally:
        engine.dispose()
    prefix = good.rsplit("_", 1)[0]
    wrong = f"{prefix}_{'0' * 64}"
    log = tmp_path / "api.log"
    with api_process(database_url, log) as url:
        assert httpx.get(f"{url}/payments", headers=bearer(good)).status_code == 200
        assert httpx.get(f"{url}/payments", headers=bearer(wrong)).status_code == 401
        assert httpx.get(f"{url}/payments", headers=bearer(revoked)).status_code == 401
        basic = {"Authorization": f"Basic {good}"}
        assert httpx.get(f"{url}/payments", headers=basic).status_code == 401
        body = {"amount": 100, "currency": "USD", "customer_id": "c", "payment_method": "pm_x"}
        # Gets past authentication and fails later (no Temporal): the error path logs too.
        httpx.post(f"{url}/payments", json={**body, "order_id": "o"}, headers=bearer(good))
    text = log.read_text()
    assert "api_key_rejected" in text and prefix in text, text
    for key in (good, revoked):
        assert secret_of(key) not in text


async def test_ledger_holds_no_key_secret(stack: Stack) -> None:
    """After keys are issued, rotated and used for a payment, no ledger value in any table
    contains a key's secret, while the keys' public prefixes are there."""
    rotated = issue_api_key(stack.engine, "mer-ledger")
    with transaction(session_factory(stack.engine)) as session:
        _, successor = merchants.rotate_key(
            session, rotated.rsplit("_", 1)[0], overlap=timedelta(hours=1), mode=KeyMode.TEST
        )
    created = await stack.pay()
    assert created.status_code == 201, created.text
    await stack.wait_final(created.json()["id"])
    everything = _all_rows_as_text(stack.engine)
    for key in (stack.api_key, rotated, successor.text):
        assert key.rsplit("_", 1)[0] in everything
        assert secret_of(key) not in everything


async def test_temporal_history_holds_no_key_secret(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    """The history of a payment made with a key names its merchant but never carries the key
    (the test stack's payloads are unencrypted, so a secret would show in plain text)."""
    key = uuid.uuid4().hex
    created = await stack.pay(key)
    assert created.status_code == 201, created.text
    payment = await stack.wait_final(created.json()["id"])
    handle = dev_env.client.get_workflow_handle(workflow_id(stack.settings.default_merchant, key))
    history = await handle.fetch_history()
    text = history.to_json() + "\n".join(_payload_texts(event) for event in history.events)
    assert payment["id"] in text
    assert secret_of(stack.api_key) not in text
    assert stack.api_key.rsplit("_", 1)[0] not in text


def _payload_texts(message: Message) -> str:
    """Every Payload's bytes inside ``message``, decoded: history JSON shows them as base64."""
    if isinstance(message, Payload):
        return message.data.decode(errors="replace")
    found: list[str] = []
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items = [item for item in value.values() if isinstance(item, Message)]
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        found.extend(_payload_texts(item) for item in items)
    return "\n".join(found)


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as running:
        yield running
