"""``paytide worker``: run the worker against the configured Temporal cluster until stopped."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateways.registry import build_gateways
from ledger.engine import create_ledger_engine, session_factory
from paytide.logging import get_logger
from paytide.settings import Settings
from paytide.temporal import connect
from worker.assemble import build_worker

log = get_logger("paytide.worker")


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    engine = create_ledger_engine(settings.effective_database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0)) as http:
            with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
                worker = build_worker(
                    client,
                    settings,
                    sessions=session_factory(engine),
                    gateways=build_gateways(settings, http),
                    http=http,
                    executor=executor,
                )
                async with worker:
                    log.info(
                        "worker_started",
                        task_queue=settings.temporal_task_queue,
                        namespace=settings.temporal_namespace,
                    )
                    await stop.wait()
                    log.info("worker_stopping")
    finally:
        engine.dispose()
