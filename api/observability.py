"""Request telemetry: a span and a count for every HTTP request, initiation latency for
``POST /payments``, and ``GET /metrics`` (operators only) serving this process's series."""

from __future__ import annotations

import time

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import require_operator
from paytide.metrics import ApiMetrics, exposition
from paytide.tracing import Tracing

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The route's path template (``/payments/{payment_id}``), never the raw path: a label or
    span name per payment id would make a new series per payment."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            path: str = route.path
            return path
    return UNMATCHED


class RequestTelemetry:
    """Outermost middleware, so refusals by the auth middleware are counted and traced too."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, tracing: Tracing) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        template = route_template(scope)
        status = 500
        started = time.perf_counter()

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # A caller that sends W3C traceparent (a merchant's own tracing) gets our spans in its
        # trace; otherwise this request starts one.
        carrier = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        with self.tracing.tracer.start_as_current_span(
            f"{method} {template}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": template},
        ) as span:
            try:
                await self.app(scope, receive, remember_status)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                elapsed = time.perf_counter() - started
                self.metrics.http_requests.labels(
                    route=template, method=method, status=str(status)
                ).inc()
                if method == "POST" and template == "/payments":
                    self.metrics.observe_initiation(status, elapsed)


def metrics_of(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus' scrape target. Operator key only: the series hold no ids, but payment
    volumes and failure rates per currency and gateway are business data."""
    require_operator(request)
    body, content_type = await run_in_threadpool(exposition, metrics_of(request).registry)
    return Response(body, headers={"Content-Type": content_type})
