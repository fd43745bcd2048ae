"""``paytide worker``: run the worker against the configured Temporal cluster until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateways.registry import build_gateways
from ledger.engine import create_ledger_engine, session_factory
from paytide.logging import get_logger
from paytide.metrics import WorkerMetrics
from paytide.settings import ConfigError, Settings
from paytide.temporal import connect, prometheus_runtime
from paytide.tracing import tracing_from_settings
from worker.assemble import build_worker
from worker.metrics_server import free_loopback_address, serving_metrics

log = get_logger("paytide.worker")


async def run_worker(settings: Settings) -> None:
    metrics = WorkerMetrics()
    tracing = tracing_from_settings(settings, "paytide-worker")
    serve_metrics = settings.worker_metrics_port != 0
    sdk_address = free_loopback_address() if serve_metrics else None
    runtime = prometheus_runtime(sdk_address) if sdk_address else None
    client = await connect(settings, runtime=runtime)
    engine = create_ledger_engine(settings.effective_database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if serve_metrics:
                try:
                    stack.enter_context(
                        serving_metrics(
                            metrics.registry,
                            settings.worker_metrics_host,
                            settings.worker_metrics_port,
                            sdk_address=sdk_address,
                        )
                    )
                except OSError as error:
                    raise ConfigError(
                        f"PAYTIDE_WORKER_METRICS_PORT: cannot serve /metrics on "
                        f"{settings.worker_metrics_host}:{settings.worker_metrics_port} ({error}); "
                        "choose a free port, or 0 to turn the worker's metrics off"
                    ) from None
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))
            )
            with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
                worker = build_worker(
                    client,
                    settings,
                    sessions=session_factory(engine),
                    gateways=build_gateways(settings, http),
                    http=http,
                    executor=executor,
                    metrics=metrics,
                    tracing=tracing,
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
        tracing.shutdown()
