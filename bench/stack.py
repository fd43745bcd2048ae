"""The stack the benchmark measures: `paytide dev` on free ports, a throw-away ledger, and the
baseline's worker next to it on the same Temporal dev server."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from paytide.devstack import DEMO_KEY_FILE

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT = 120.0


@dataclass(frozen=True, kw_only=True)
class RunningStack:
    api_url: str
    api_key: str
    temporal_address: str
    namespace: str
    dev_pid: int
    bare_worker_pid: int
    state_dir: Path
    env: dict[str, str]


def free_port() -> int:
    # Below the ephemeral range (32768-60999): a port picked there cannot be taken by another
    # process's outgoing connection before the stack's child binds it.
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the ledger, dropped afterwards; yields its URL."""
    name = f"paytide_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        raise SystemExit(
            f"--ledger postgres needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth): "
            f"{error}. Start it, or use --ledger sqlite."
        ) from None
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_stack(
    *, temporal_db: str, database_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """`paytide dev --no-demo` in a temporary state folder plus the bare worker; ``extra_env``
    goes to every process of the stack."""
    state = Path(tempfile.mkdtemp(prefix="paytide-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    api_port = free_port()
    temporal_address = f"127.0.0.1:{free_port()}"
    env.update(
        {
            "PAYTIDE_STATE_DIR": str(state),
            "PAYTIDE_TEMPORAL_ADDRESS": temporal_address,
            "PAYTIDE_TEMPORAL_UI_PORT": str(free_port()),
            "PAYTIDE_TEMPORAL_DEV_DB": temporal_db,
            "PAYTIDE_API_PORT": str(api_port),
            "PAYTIDE_SANDBOX_PORT": str(free_port()),
            "PAYTIDE_WORKER_METRICS_PORT": str(free_port()),
            "PAYTIDE_DEV_SMTP_PORT": str(free_port()),
            "PAYTIDE_SANDBOX_WEBHOOK_DELAY": "0",
            "PAYTIDE_LOG_LEVEL": "WARNING",
            # One merchant at full speed: the per-key limit would otherwise measure itself.
            "PAYTIDE_RATE_LIMIT_PER_SECOND": "1000000",
            "PAYTIDE_RATE_LIMIT_BURST": "1000000",
        }
    )
    if database_url:
        env["PAYTIDE_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    print(f"starting paytide dev in {state} …", flush=True)
    output = (state / "dev.out").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "paytide", "dev", "--no-demo"],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    bare: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b"Press Ctrl-C" not in (state / "dev.out").read_bytes():
            if dev.poll() is not None or time.monotonic() > deadline:
                tail = (state / "dev.out").read_text(errors="replace")[-2000:]
                raise SystemExit(f"paytide dev did not start:\n{tail}\nlogs in {state}/logs")
            time.sleep(0.25)
        api_key = (state / DEMO_KEY_FILE).read_text().strip()
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_worker"],
            env=env,
            stdout=(state / "bare_worker.out").open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        yield RunningStack(
            api_url=f"http://127.0.0.1:{api_port}",
            api_key=api_key,
            temporal_address=temporal_address,
            namespace="default",
            dev_pid=dev.pid,
            bare_worker_pid=bare.pid,
            state_dir=state,
            env=env,
        )
    finally:
        if bare is not None:
            _stop(bare)
        _stop(dev)
        output.close()
        shutil.rmtree(state, ignore_errors=True)
