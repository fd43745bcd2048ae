"""The Starlette application: routes, error handlers and the lifespan that builds its state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version

import httpx
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from temporalio.client import Client

from api.auth import ApiKeyAuth
from api.auth_failures import AuthFailures
from api.codec import decode_payloads, encode_payloads
from api.dashboard import dashboard_data, dashboard_page
from api.errors import (
    ApiError,
    on_api_error,
    on_database_error,
    on_http_exception,
    on_unexpected,
)
from api.health import healthz, readyz
from api.key_cache import KeyCache
from api.observability import RequestTelemetry, metrics_endpoint
from api.openapi import build_spec, openapi_json
from api.payments import (
    cancel_payment,
    capture_payment,
    create_payment,
    get_payment,
    list_payments,
)
from api.rate_limit import RateLimiter
from api.refunds import create_refund, get_refund, list_refunds
from api.request_target import RequestTargetText
from api.reviews import list_reviews, review_payment
from api.state import ApiState
from api.webhook_deliveries import get_delivery, list_deliveries, retry_delivery
from api.webhook_endpoints import (
    create_endpoint,
    disable_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from api.webhooks import receive_webhook
from gateways.registry import build_verifiers
from ledger.engine import create_ledger_engine, session_factory
from paytide.metrics import ApiMetrics
from paytide.outbound import Resolver, system_resolver
from paytide.settings import Settings
from paytide.temporal import connect
from paytide.tracing import Tracing, tracing_from_settings

ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Route("/dashboard/data", dashboard_data, methods=["GET"]),
    Route("/payments", create_payment, methods=["POST"]),
    Route("/payments", list_payments, methods=["GET"]),
    Route("/payments/{payment_id}", get_payment, methods=["GET"]),
    Route("/payments/{payment_id}/cancel", cancel_payment, methods=["POST"]),
    Route("/payments/{payment_id}/capture", capture_payment, methods=["POST"]),
    Route("/payments/{payment_id}/review", review_payment, methods=["POST"]),
    Route("/payments/{payment_id}/refunds", create_refund, methods=["POST"]),
    Route("/payments/{payment_id}/refunds", list_refunds, methods=["GET"]),
    Route("/payments/{payment_id}/refunds/{refund_id}", get_refund, methods=["GET"]),
    Route("/reviews", list_reviews, methods=["GET"]),
    Route("/webhook-endpoints", create_endpoint, methods=["POST"]),
    Route("/webhook-endpoints", list_endpoints, methods=["GET"]),
    Route("/webhook-endpoints/{endpoint_id}", get_endpoint, methods=["GET"]),
    Route("/webhook-endpoints/{endpoint_id}", update_endpoint, methods=["POST"]),
    Route("/webhook-endpoints/{endpoint_id}/disable", disable_endpoint, methods=["POST"]),
    Route("/webhook-endpoints/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/webhook-deliveries", list_deliveries, methods=["GET"]),
    Route("/webhook-deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/webhook-deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
    Route("/webhooks/{gateway}", receive_webhook, methods=["POST"]),
    Route("/codec/encode", encode_payloads, methods=["POST", "OPTIONS"]),
    Route("/codec/decode", decode_payloads, methods=["POST", "OPTIONS"]),
]


def create_app(
    settings: Settings,
    *,
    temporal: Client | None = None,
    metrics: ApiMetrics | None = None,
    tracing: Tracing | None = None,
    resolver: Resolver = system_resolver,
) -> Starlette:
    """``metrics`` and ``tracing``: this app's own registry and tracer; by default a fresh
    registry and tracing as the settings say (off without PAYTIDE_OTLP_ENDPOINT). ``resolver``:
    how webhook endpoint hosts are resolved for their check (the system's by default)."""
    metrics = metrics or ApiMetrics()
    tracing = tracing or tracing_from_settings(settings, "paytide-api")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The interceptor starts a span per Temporal call and carries the trace to the worker.
        client = tracing.traced_client(temporal or await connect(settings, lazy=True))
        engine = create_ledger_engine(settings.effective_database_url)
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0)) as http:
            app.state.paytide = ApiState(
                settings=settings,
                temporal=client,
                engine=engine,
                sessions=session_factory(engine),
                http=http,
                verifiers=build_verifiers(settings),
                keys=KeyCache(settings.api_key_cache_seconds),
                limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
                auth_failures=AuthFailures(
                    settings.auth_failure_limit, settings.auth_failure_window
                ),
                metrics=metrics,
                resolver=resolver,
            )
            try:
                yield
            finally:
                engine.dispose()
                tracing.shutdown()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestTelemetry, metrics=metrics, tracing=tracing),
            Middleware(RequestTargetText),
            Middleware(ApiKeyAuth),
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_exception,
            DBAPIError: on_database_error,
            Exception: on_unexpected,
        },
    )
    app.state.openapi = build_spec(version("paytide"))
    app.state.metrics = metrics
    return app
