"""The whole paytide stack on real parts, inside the test's event loop.

Temporal dev server (session fixture), the sandbox gateway and the API served by uvicorn on
loopback ports, the real worker with real activities, the ledger on SQLite or PostgreSQL, and a
merchant endpoint that records the signed notifications it receives.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from api.app import create_app
from gateways.registry import build_gateways
from gateways.sandbox_server.app import create_sandbox_app
from gateways.sandbox_server.config import SandboxConfig
from ledger import merchants
from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from paytide.api_keys import KeyMode, Role
from paytide.metrics import ApiMetrics, WorkerMetrics
from paytide.outbound import Resolver, system_resolver
from paytide.settings import Settings
from paytide.temporal import prometheus_runtime
from paytide.tracing import Tracing
from tests.support.serve import bound_socket, serve, serve_api, url_of
from tests.support.webhook_recorder import WebhookRecorder
from worker.assemble import build_worker
from worker.metrics_server import free_loopback_address, serving_metrics

FINAL = {"succeeded", "failed", "blocked", "canceled", "conflicted"}
MERCHANT_SECRET = "whsec_merchant_test"
OPERATOR_ID = "operator"


def _in_progress(response: httpx.Response) -> bool:
    return response.status_code == 409 and response.json()["error"]["code"] == "payment_in_progress"


async def post_payment(
    http: httpx.AsyncClient, body: Mapping[str, Any], key: str, *, within: float = 60
) -> httpx.Response:
    """POST /payments as a client must: 409 payment_in_progress (its workflow has started, but no
    worker has written its ledger row yet) is the same request again after Retry-After. Any other
    answer, or a transport error, is the caller's."""
    async with asyncio.timeout(within):
        while True:
            response = await http.post("/payments", json=body, headers={"Idempotency-Key": key})
            if not _in_progress(response):
                return response
            await asyncio.sleep(float(response.headers["Retry-After"]))


def issue_api_key(engine: Engine, merchant_id: str, role: Role = Role.MERCHANT) -> str:
    """A fresh key for ``merchant_id`` (created when missing), as `paytide merchants` makes one."""
    with transaction(session_factory(engine)) as session:
        merchants.ensure_merchant(session, merchant_id=merchant_id, name=merchant_id, role=role)
        return merchants.issue_key(session, merchant_id, KeyMode.TEST).text


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass
class Stack:
    settings: Settings
    api: httpx.AsyncClient
    sandbox: httpx.AsyncClient
    engine: Engine
    merchant: WebhookRecorder
    # `api` acts for settings.default_merchant with this key; `operator` holds an operator's key.
    api_key: str
    operator: httpx.AsyncClient
    # This stack's own registries, and where the in-process worker serves its /metrics.
    api_metrics: ApiMetrics
    worker_metrics: WorkerMetrics
    worker_metrics_url: str | None = None

    @property
    def auth_headers(self) -> dict[str, str]:
        """For a test that opens its own client to the API."""
        return bearer(self.api_key)

    async def pay(self, key: str | None = None, **fields: Any) -> httpx.Response:
        body = {
            "amount": 1999,
            "currency": "USD",
            "customer_id": f"cus_{uuid.uuid4().hex[:8]}",
            "payment_method": "pm_sandbox_ok",
            "order_id": f"order_{uuid.uuid4().hex[:8]}",
            **fields,
        }
        return await post_payment(self.api, body, key or uuid.uuid4().hex)

    async def wait_final(self, payment_id: str, within: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                response = await self.api.get(f"/payments/{payment_id}")
                assert response.status_code == 200, response.text
                payment: dict[str, Any] = response.json()
                if payment["status"] in FINAL:
                    return payment
                await asyncio.sleep(0.1)

    async def charges_for(self, payment_id: str) -> int:
        stats = (await self.sandbox.get("/v1/stats")).json()
        return int(stats["charges_by_reference"].get(payment_id, 0))

    async def requests_for_keys(self, prefix: str) -> dict[str, int]:
        stats = (await self.sandbox.get("/v1/stats")).json()
        return {k: v for k, v in stats["requests_by_key"].items() if k.startswith(prefix)}

    def ledger_statuses(self, payment_id: str) -> list[str]:
        with transaction(session_factory(self.engine)) as session:
            return [event.status for event in ledger.list_events(session, payment_id)]

    def webhook_deliveries(self, payment_id: str) -> list[tuple[str, str]]:
        from sqlmodel import select

        from ledger.models import WebhookEvent

        with transaction(session_factory(self.engine)) as session:
            rows = session.exec(select(WebhookEvent).where(WebhookEvent.payment_id == payment_id))
            return [(row.event_type, row.delivery) for row in rows]


def stack_settings(
    client: Client,
    database_url: str,
    api_url: str,
    sandbox_url: str,
    merchant_url: str,
    **extra: Any,
) -> Settings:
    values: dict[str, Any] = {
        "temporal_address": client.service_client.config.target_host,
        "temporal_namespace": client.namespace,
        "temporal_task_queue": f"payments-{uuid.uuid4().hex[:8]}",
        "database_url": database_url,
        "api_public_url": api_url,
        "sandbox_url": sandbox_url,
        "sandbox_webhook_url": f"{api_url}/webhooks/sandbox",
        "sandbox_webhook_delay": 0.1,
        "sandbox_slow_delay": 2.0,
        "merchant_callback_url": f"{merchant_url}/webhooks",
        "merchant_callback_secret": MERCHANT_SECRET,
        "webhook_timeout": 5.0,
        "initiate_wait": 5.0,
        # Load and fault tests send hundreds of requests with one key at once; the rate-limit
        # tests set their own limits.
        "rate_limit_per_second": 100_000.0,
        "rate_limit_burst": 100_000,
        **extra,
    }
    return Settings(**values)


def subprocess_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a paytide process started by a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    names: Mapping[str, str] = {
        "temporal_address": settings.temporal_address,
        "temporal_namespace": settings.temporal_namespace,
        "temporal_task_queue": settings.temporal_task_queue,
        "database_url": settings.database_url,
        "sandbox_url": settings.sandbox_url,
        "merchant_callback_url": settings.merchant_callback_url,
        "log_format": "json",
    }
    env.update({f"PAYTIDE_{k.upper()}": v for k, v in names.items()})
    # Several test workers (and a developer's own stack) run at once: no fixed metrics port.
    env["PAYTIDE_WORKER_METRICS_PORT"] = "0"
    if settings.merchant_callback_secret is not None:
        env["PAYTIDE_MERCHANT_CALLBACK_SECRET"] = (
            settings.merchant_callback_secret.get_secret_value()
        )
    return env


@asynccontextmanager
async def running_stack(
    client: Client,
    database_url: str,
    *,
    in_process_worker: bool = True,
    api_sock: socket.socket | None = None,
    tracing: Tracing | None = None,
    sdk_metrics: bool = False,
    resolver: Resolver = system_resolver,
    **extra: Any,
) -> AsyncIterator[Stack]:
    """``api_sock``: a socket bound by the caller, when something must know the API's URL
    before the stack starts (a gateway test server that posts webhooks to it).

    ``tracing``: one tracer for the API and the worker (off by default). ``sdk_metrics``: the
    worker connects through its own Temporal runtime with Prometheus telemetry, so its /metrics
    carries the SDK's series too (a runtime costs threads; only tests that read them ask).

    ``resolver``: how the API and the worker resolve webhook endpoint hosts for their check."""
    tracing = tracing or Tracing()
    api_metrics, worker_metrics = ApiMetrics(), WorkerMetrics()
    worker_metrics_url: str | None = None
    api_sock, sandbox_sock = api_sock or bound_socket(), bound_socket()
    merchant = WebhookRecorder()
    async with AsyncExitStack() as stack:
        merchant_url = await stack.enter_async_context(serve(merchant.app))
        settings = stack_settings(
            client, database_url, url_of(api_sock), url_of(sandbox_sock), merchant_url, **extra
        )
        sandbox_app = create_sandbox_app(
            SandboxConfig(
                api_key=settings.sandbox_api_key.get_secret_value(),
                webhook_url=settings.effective_sandbox_webhook_url,
                webhook_secret=settings.sandbox_webhook_secret.get_secret_value(),
                webhook_delay=settings.sandbox_webhook_delay,
                slow_delay=settings.sandbox_slow_delay,
                flaky_failures=settings.sandbox_flaky_failures,
            )
        )
        await stack.enter_async_context(serve(sandbox_app, sock=sandbox_sock))
        app = create_app(
            settings, temporal=client, metrics=api_metrics, tracing=tracing, resolver=resolver
        )
        await stack.enter_async_context(serve_api(app, settings, sock=api_sock))
        engine = create_ledger_engine(database_url)
        stack.callback(engine.dispose)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=20))
        if in_process_worker:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=16))
            worker_client, sdk_address = client, None
            if sdk_metrics:
                sdk_address = free_loopback_address()
                worker_client = await Client.connect(
                    settings.temporal_address,
                    namespace=settings.temporal_namespace,
                    data_converter=client.data_converter,
                    runtime=prometheus_runtime(sdk_address),
                )
            endpoint = stack.enter_context(
                serving_metrics(worker_metrics.registry, "127.0.0.1", 0, sdk_address=sdk_address)
            )
            worker_metrics_url = endpoint.url
            worker = build_worker(
                worker_client,
                settings,
                sessions=session_factory(engine),
                gateways=build_gateways(settings, http),
                http=http,
                executor=executor,
                metrics=worker_metrics,
                tracing=tracing,
                resolver=resolver,
            )
            await stack.enter_async_context(worker)
        # One key per stack for the default merchant, so tests keep their merchant's ids.
        api_key = issue_api_key(engine, settings.default_merchant)
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=settings.effective_api_url, timeout=30, headers=bearer(api_key)
            )
        )
        operator = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=settings.effective_api_url,
                timeout=30,
                headers=bearer(issue_api_key(engine, OPERATOR_ID, Role.OPERATOR)),
            )
        )
        sandbox = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=settings.effective_sandbox_url,
                headers={"Authorization": f"Bearer {settings.sandbox_api_key.get_secret_value()}"},
            )
        )
        yield Stack(
            settings=settings,
            api=api,
            sandbox=sandbox,
            engine=engine,
            merchant=merchant,
            api_key=api_key,
            operator=operator,
            api_metrics=api_metrics,
            worker_metrics=worker_metrics,
            worker_metrics_url=worker_metrics_url,
        )


@asynccontextmanager
async def late_worker(stack: Stack, client: Client) -> AsyncIterator[None]:
    """The stack's worker started later, for a stack built with ``in_process_worker=False``: the
    test decides when payments are first admitted."""
    async with AsyncExitStack() as exits:
        http = await exits.enter_async_context(httpx.AsyncClient(timeout=20))
        worker = build_worker(
            client,
            stack.settings,
            sessions=session_factory(stack.engine),
            gateways=build_gateways(stack.settings, http),
            http=http,
            executor=exits.enter_context(ThreadPoolExecutor(max_workers=16)),
        )
        await exits.enter_async_context(worker)
        yield
