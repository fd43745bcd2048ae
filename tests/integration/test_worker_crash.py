"""A worker killed with SIGKILL right after the gateway took the charge loses nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from paytide.codec import EncryptionCodec, data_converter
from paytide.settings import Settings
from tests.integration.stack import Stack, running_stack, subprocess_env


@contextmanager
def worker_process(stack: Stack, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = subprocess_env(stack.settings)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paytide", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


async def _wait_for_charge(stack: Stack, payment_id: str) -> None:
    async with asyncio.timeout(30):
        while await stack.charges_for(payment_id) == 0:
            await asyncio.sleep(0.02)


async def test_sigkill_after_gateway_call_then_restart_charges_once(
    dev_env: WorkflowEnvironment, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL while the gateway's answer is in flight; a new worker finishes with one charge."""
    # The worker subprocess encrypts with the dev payload key; the API must read the same way.
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=data_converter(EncryptionCodec(Settings().payload_key_ring)),
    )
    async with running_stack(
        client,
        database_url,
        in_process_worker=False,
        initiate_wait=0.5,
        sandbox_slow_delay=3.0,
        gateway_call_timeout=5.0,
    ) as stack:
        log = tmp_path / "worker.log"
        key = uuid.uuid4().hex
        with worker_process(stack, log) as first:
            created = await stack.pay(key, payment_method="pm_sandbox_slow")
            assert created.status_code == 202, created.text
            payment_id = created.json()["id"]
            # The sandbox has made the charge and is holding its answer: kill the worker now.
            await _wait_for_charge(stack, payment_id)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL

        with worker_process(stack, log):
            final = await stack.wait_final(payment_id, within=60)

        assert final["status"] == "succeeded", log.read_text()[-3000:]
        assert await stack.charges_for(payment_id) == 1
        merchant = stack.settings.default_merchant
        requests = await stack.requests_for_keys(f"payment:{merchant}:{key}/charge/")
        # The restarted worker retried the same call, with the same key: replayed, not re-charged.
        assert requests == {f"payment:{merchant}:{key}/charge/1": 2}
        assert stack.ledger_statuses(payment_id).count("succeeded") == 1
