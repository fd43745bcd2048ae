"""``python -m bench``: paytide against its own engine's limit, in one run.

Starts ``paytide dev`` on free ports (Temporal dev server in memory or in a SQLite file; ledger
on SQLite or on a fresh PostgreSQL database) and, on the same dev server, a worker for a bare
workflow of the same shape as a payment. Then:
  1. engine baseline: the bare workflow, sequential and saturated (closed loop);
  2. paytide over HTTP with the sandbox gateway: sequential, saturated (closed loop), and a
     fixed rate at half the saturated rate (open loop).
Prints latency, throughput, CPU and peak RSS per process, and paytide ÷ baseline throughput;
``--json FILE`` writes the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from api.idempotency import workflow_id
from bench import load
from bench.engine import bare_payment
from bench.merchant import Settled, new_secret, serving
from bench.payments import http_payment
from bench.phase import Phase, load_average, measure
from bench.report import breakdown, document, table
from bench.stack import RunningStack, free_port, local_stack, postgres_database
from bench.watch import Watch
from paytide.settings import Settings
from paytide.temporal import connect

WARM_UP = 5
DEMO_MERCHANT = "demo"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--temporal-db", choices=["file", "memory"], default="file")
    parser.add_argument("--ledger", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument(
        "--sequential", type=int, default=50, help="payments in each sequential phase"
    )
    parser.add_argument("--clients", type=int, default=8, help="clients in each saturation phase")
    parser.add_argument("--seconds", type=float, default=20, help="length of each timed phase")
    parser.add_argument(
        "--rate", type=float, help="fixed-rate phase: payments/s (default: half of saturation)"
    )
    parser.add_argument(
        "--observe",
        choices=["webhook", "poll"],
        default="webhook",
        help="how a client learns its payment succeeded: the merchant callback (default) or "
        "GET /payments/{id} every 25 ms",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser


async def _history_shape(client: Client, workflow: str) -> dict[str, Any]:
    """Events, workflow tasks, activities and markers of one finished workflow, and when each
    event happened."""
    try:
        history = await client.get_workflow_handle(workflow).fetch_history()
    except RPCError as error:
        return {"workflow_id": workflow, "error": str(error)}
    kinds = Counter(EventType.Name(event.event_type) for event in history.events)
    markers = Counter(
        event.marker_recorded_event_attributes.marker_name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )
    first = history.events[0].event_time.ToDatetime()
    timeline = []
    for event in history.events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if event.HasField("activity_task_scheduled_event_attributes"):
            name += " " + event.activity_task_scheduled_event_attributes.activity_type.name
        at = (event.event_time.ToDatetime() - first).total_seconds() * 1000
        timeline.append([round(at, 1), name])
    return {
        "workflow_id": workflow,
        "events": len(history.events),
        "workflow_tasks": kinds["EVENT_TYPE_WORKFLOW_TASK_COMPLETED"],
        "activities": kinds["EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"],
        "local_activities": markers["core_local_activity"],
        "other_markers": sum(markers.values()) - markers["core_local_activity"],
        "timers": kinds["EVENT_TYPE_TIMER_STARTED"],
        "signals": kinds["EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"],
        "search_attribute_upserts": kinds["EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"],
        "timeline_ms": timeline,
    }


async def _run(
    args: argparse.Namespace, stack: RunningStack, watch: Watch, merchant: tuple[int, str]
) -> tuple[list[Phase], dict[str, Any]]:
    async with serving(*merchant) as settled:
        return await _phases(args, stack, watch, settled if args.observe == "webhook" else None)


async def _phases(
    args: argparse.Namespace, stack: RunningStack, watch: Watch, settled: Settled | None
) -> tuple[list[Phase], dict[str, Any]]:
    temporal = await connect(
        Settings(temporal_address=stack.temporal_address, temporal_namespace=stack.namespace)
    )
    phases: list[Phase] = []
    bare_ids: list[str] = []
    bare = bare_payment(temporal, bare_ids)
    print(
        "engine baseline (bare workflow, same shape, same server and worker settings)", flush=True
    )
    await load.sequential(bare, Phase("engine", "warm-up"), WARM_UP)
    phases.append(
        await measure(
            p := Phase("engine", "sequential"), load.sequential(bare, p, args.sequential), watch
        )
    )
    phases.append(
        await measure(
            p := Phase("engine", "saturation", clients=args.clients),
            load.closed_loop(bare, p, args.seconds),
            watch,
        )
    )

    keys: list[str] = []
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, headers=headers) as http:
        pay = http_payment(http, keys, settled)
        print(
            "paytide over HTTP (sandbox gateway, webhook delay 0; succeeded seen by "
            f"{'the merchant callback' if settled else 'polling GET /payments/{id}'})",
            flush=True,
        )
        await load.sequential(pay, Phase("paytide", "warm-up"), WARM_UP)
        phases.append(
            await measure(
                p := Phase("paytide", "sequential"), load.sequential(pay, p, args.sequential), watch
            )
        )
        saturated = await measure(
            p := Phase("paytide", "saturation", clients=args.clients),
            load.closed_loop(pay, p, args.seconds),
            watch,
        )
        rate = args.rate or max(0.5, round(saturated.per_second / 2, 1))
        fixed = await measure(
            p := Phase("paytide", "fixed-rate", target_rate=rate),
            load.fixed_rate(pay, p, args.seconds),
            watch,
        )
        phases += [saturated, fixed]

    # The last payment of each sequential phase: nothing else competed with it.
    history: dict[str, Any] = {}
    last = args.sequential + WARM_UP - 1
    if len(bare_ids) > last:
        history["engine"] = await _history_shape(temporal, bare_ids[last])
    if len(keys) > last:
        history["paytide"] = await _history_shape(temporal, workflow_id(DEMO_MERCHANT, keys[last]))
    return phases, history


def _machine() -> dict[str, Any]:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": os.cpu_count(),
        "memory_mib": mem_kib // 1024,
        "load_average_1m_at_start": load_average(),
    }


def main() -> None:
    args = _parser().parse_args()
    setup: dict[str, Any] = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "temporal_db": args.temporal_db,
        "ledger": args.ledger,
        "sequential": args.sequential,
        "clients": args.clients,
        "seconds": args.seconds,
        "observe": args.observe,
        "machine": _machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"machine: {setup['machine']}", flush=True)
    database: AbstractContextManager[str] = (
        postgres_database() if args.ledger == "postgres" else nullcontext("")
    )
    # The merchant endpoint runs in the bench; the worker POSTs every payment's callback there.
    merchant = (free_port(), new_secret())
    callbacks = {
        "PAYTIDE_MERCHANT_CALLBACK_URL": f"http://127.0.0.1:{merchant[0]}/callbacks",
        "PAYTIDE_MERCHANT_CALLBACK_SECRET": merchant[1],
    }
    with (
        database as database_url,
        local_stack(
            temporal_db=args.temporal_db, database_url=database_url, extra_env=callbacks
        ) as stack,
    ):
        print(
            f"stack up (Temporal dev server: {args.temporal_db}, ledger: {args.ledger})", flush=True
        )
        deadline = time.monotonic() + 60
        while b"polling" not in (stack.state_dir / "bare_worker.out").read_bytes():
            if time.monotonic() > deadline:
                output = (stack.state_dir / "bare_worker.out").read_text(errors="replace")
                raise SystemExit(f"the bare worker did not start:\n{output[-2000:]}")
            time.sleep(0.2)
        watch = Watch.of_dev(
            stack.dev_pid, {"bare_worker": stack.bare_worker_pid}, solo={"bench": os.getpid()}
        )
        missing = {"temporal", "worker", "api", "sandbox"} - set(watch.roots)
        if missing:
            raise SystemExit(f"could not find these services under paytide dev: {sorted(missing)}")
        phases, history = asyncio.run(_run(args, stack, watch, merchant))
    print()
    print(table(phases))
    print("one sequential payment's history (task: wait+run ms):")
    for system, shape in history.items():
        print(f"  {system}: {breakdown(shape)}")
    if args.json:
        args.json.write_text(json.dumps(document(phases, setup=setup, history=history), indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
