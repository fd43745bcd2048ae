"""``python -m bench``: payments through the HTTP API of a real local stack, with figures.

Starts ``paytide dev`` on free ports with a throw-away state folder (or attaches to a running
API with ``--api``), then measures:
  1. sequential: one client, one payment at a time (POST latency = initiation latency);
  2. concurrent: N clients in a closed loop for a fixed time (throughput).
For each phase: POST /payments p50/p95/p99, time until the payment reads ``succeeded``,
payments per second and errors. ``--json FILE`` writes the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx


@dataclass
class Phase:
    name: str
    post_ms: list[float] = field(default_factory=list)
    settle_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        return {
            "phase": self.name,
            "payments": len(self.post_ms),
            "errors": self.errors,
            "post_p50_ms": _pct(self.post_ms, 50),
            "post_p95_ms": _pct(self.post_ms, 95),
            "post_p99_ms": _pct(self.post_ms, 99),
            "settle_p50_ms": _pct(self.settle_ms, 50),
            "settle_p95_ms": _pct(self.settle_ms, 95),
            "payments_per_s": round(len(self.post_ms) / self.seconds, 1) if self.seconds else 0,
        }


def _pct(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_stack() -> Iterator[tuple[str, str]]:
    """`paytide dev` on free ports in a temporary state folder; yields the API URL and the demo
    merchant's API key it prints."""
    state = Path(tempfile.mkdtemp(prefix="paytide-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    api_port = _free_port()
    env.update(
        {
            "PAYTIDE_STATE_DIR": str(state),
            "PAYTIDE_TEMPORAL_ADDRESS": f"127.0.0.1:{_free_port()}",
            "PAYTIDE_TEMPORAL_UI_PORT": str(_free_port()),
            "PAYTIDE_API_PORT": str(api_port),
            "PAYTIDE_SANDBOX_PORT": str(_free_port()),
            "PAYTIDE_SANDBOX_WEBHOOK_DELAY": "0",
            "PAYTIDE_LOG_LEVEL": "WARNING",
            # The benchmark is one merchant polling hard; the per-key limit would measure itself.
            "PAYTIDE_RATE_LIMIT_PER_SECOND": "1000000",
            "PAYTIDE_RATE_LIMIT_BURST": "1000000",
        }
    )
    print(f"starting the local stack in {state} …", flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "paytide", "dev", "--no-demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        api_key = ""
        for line in process.stdout:
            if line.strip().startswith("API key"):
                api_key = line.split()[2]
            if "Press Ctrl-C" in line:
                break
            if process.poll() is not None:
                raise SystemExit(f"paytide dev failed to start; logs in {state}/logs")
        if not api_key:
            raise SystemExit("paytide dev printed no API key")
        print("stack ready", flush=True)
        yield f"http://127.0.0.1:{api_port}", api_key
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        process.stdout.close()


async def _one(client: httpx.AsyncClient, phase: Phase) -> None:
    body = {
        "amount": 1999,
        "currency": "USD",
        "customer_id": f"cus_{uuid.uuid4().hex[:10]}",
        "order_id": uuid.uuid4().hex,
        "payment_method": "pm_sandbox_ok",
    }
    started = time.perf_counter()
    try:
        response = await client.post(
            "/payments", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
    except httpx.HTTPError:
        phase.errors += 1
        return
    phase.post_ms.append((time.perf_counter() - started) * 1000)
    if response.status_code not in (200, 201, 202):
        phase.errors += 1
        return
    payment_id = response.json()["id"]
    while time.perf_counter() - started < 30:
        status = (await client.get(f"/payments/{payment_id}")).json().get("status")
        if status == "succeeded":
            phase.settle_ms.append((time.perf_counter() - started) * 1000)
            return
        if status in ("failed", "blocked", "canceled"):
            phase.errors += 1
            return
        await asyncio.sleep(0.02)
    phase.errors += 1


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


async def sequential(api: str, api_key: str, count: int) -> Phase:
    phase = Phase("sequential")
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=_auth(api_key)) as client:
        await _one(client, Phase("warm-up"))
        started = time.perf_counter()
        for index in range(count):
            await _one(client, phase)
            print(f"\r  sequential {index + 1}/{count}", end="", flush=True)
        phase.seconds = time.perf_counter() - started
    print(flush=True)
    return phase


async def concurrent(api: str, api_key: str, clients: int, seconds: float) -> Phase:
    phase = Phase(f"concurrent x{clients}")
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            await _one(client, phase)

    async with httpx.AsyncClient(base_url=api, timeout=30, headers=_auth(api_key)) as client:
        started = time.perf_counter()
        runners = [asyncio.create_task(loop(client)) for _ in range(clients)]
        while not all(r.done() for r in runners):
            print(f"\r  concurrent: {len(phase.post_ms)} payments", end="", flush=True)
            await asyncio.sleep(0.5)
        phase.seconds = time.perf_counter() - started
    print(flush=True)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--api", help="attach to this API instead of starting a stack")
    parser.add_argument("--api-key", help="with --api: a merchant's API key (pt_…)")
    parser.add_argument("--sequential", type=int, default=100, help="payments, one at a time")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20, help="length of the concurrent phase")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    async def run(api: str, api_key: str) -> list[Phase]:
        return [
            await sequential(api, api_key, args.sequential),
            await concurrent(api, api_key, args.clients, args.seconds),
        ]

    if args.api:
        if not args.api_key:
            parser.error("--api needs --api-key")
        phases = asyncio.run(run(args.api, args.api_key))
    else:
        with local_stack() as (api, api_key):
            phases = asyncio.run(run(api, api_key))
    rows = [phase.summary() for phase in phases]
    columns = list(rows[0])
    print(" | ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c]!s:>14}" for c in columns))
    if args.json:
        args.json.write_text(json.dumps({"phases": rows, "raw": [asdict(p) for p in phases]}))


if __name__ == "__main__":
    main()
