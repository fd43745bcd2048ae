"""What every fault scenario shares: the row it reports, how it counts lost and double-charged
payments, and the real processes it kills and restarts (worker, Temporal dev server)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError

from paytide.binaries import temporal_cli
from paytide.codec import EncryptionCodec, data_converter
from paytide.search_attributes import cli_declarations
from paytide.settings import Settings
from tests.integration.stack import FINAL, Stack, subprocess_env

# How long a scenario gives its payments to reach a final status once the fault is over.
RECOVERY_DEADLINE_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class FaultRow:
    scenario: str
    attempted: int
    completed: int
    lost: int
    charged_twice: int
    recover_seconds: float


@dataclass
class FaultTable:
    rows: list[FaultRow] = field(default_factory=list)

    def render(self) -> str:
        """A Markdown table, so the CI log can be pasted into docs/faults.md as it is."""
        header = "| scenario | attempted | completed | lost | charged twice | time to recover (s) |"
        lines = [header, "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {r.scenario} | {r.attempted} | {r.completed} | {r.lost} | {r.charged_twice} "
            f"| {r.recover_seconds:.1f} |"
            for r in self.rows
        ]
        return "\n".join(lines)


async def final_statuses(
    stack: Stack, payment_ids: Iterable[str], within: float = RECOVERY_DEADLINE_SECONDS
) -> dict[str, str | None]:
    """Each payment's status once all are final or the deadline passed (None: not in the ledger).

    Non-200 answers (503 while a part is down, 404 before the ledger has the row) are polled
    through: only the state at the deadline counts.
    """
    wanted = list(dict.fromkeys(payment_ids))
    seen: dict[str, str | None] = dict.fromkeys(wanted)
    deadline = time.monotonic() + within
    while True:
        for payment_id in [p for p in wanted if seen[p] not in FINAL]:
            try:
                response = await stack.api.get(f"/payments/{payment_id}")
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                seen[payment_id] = response.json()["status"]
        if all(status in FINAL for status in seen.values()) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)


async def double_charges(stack: Stack) -> int:
    """How many payments the sandbox charged more than once (its charges_by_reference > 1)."""
    stats = (await stack.sandbox.get("/v1/stats")).json()
    return sum(1 for count in stats["charges_by_reference"].values() if count > 1)


async def measure(
    stack: Stack,
    scenario: str,
    payment_ids: Iterable[str],
    *,
    attempted: int,
    recovery_started: float,
    within: float = RECOVERY_DEADLINE_SECONDS,
) -> tuple[FaultRow, dict[str, str | None]]:
    """Wait for the payments the client got ids for, then count what was lost or charged twice.

    ``recovery_started`` is the ``time.monotonic()`` reading when the fault ended.
    """
    statuses = await final_statuses(stack, payment_ids, within)
    recovered = time.monotonic() - recovery_started
    completed = sum(1 for status in statuses.values() if status in FINAL)
    row = FaultRow(
        scenario=scenario,
        attempted=attempted,
        completed=completed,
        lost=len(statuses) - completed,
        charged_twice=await double_charges(stack),
        recover_seconds=recovered,
    )
    return row, statuses


async def codec_client(target: str, namespace: str = "default") -> Client:
    """A client that encrypts like a `paytide worker` subprocess (the dev payload key)."""
    return await Client.connect(
        target,
        namespace=namespace,
        data_converter=data_converter(EncryptionCodec(Settings().payload_key_ring)),
    )


@contextmanager
def worker_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`paytide worker` as its own process, configured like the stack; stopped at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paytide", "worker"],
            env=subprocess_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TemporalServer:
    """A Temporal dev server this test owns: stopped and started again on the same port and
    SQLite file, so the payments it holds must survive the restart."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--log-level",
            "warn",
        ]
        for declaration in cli_declarations():
            command += ["--search-attribute", declaration]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it, and wait until the process has exited."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def connect(self, within: float = 60) -> Client:
        """A codec client, once the server answers."""
        async with asyncio.timeout(within):
            while True:
                try:
                    client = await codec_client(self.address)
                    await client.workflow_service.get_system_info(GetSystemInfoRequest())
                except RuntimeError:
                    await asyncio.sleep(0.2)
                else:
                    return client

    async def wait_ready(self, client: Client, within: float = 60) -> None:
        """Wait until ``client`` (connected before a restart) reaches the server again."""
        async with asyncio.timeout(within):
            while True:
                try:
                    await client.workflow_service.get_system_info(
                        GetSystemInfoRequest(), timeout=timedelta(seconds=2)
                    )
                except RPCError:
                    await asyncio.sleep(0.2)
                else:
                    return
