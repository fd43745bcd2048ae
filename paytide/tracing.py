"""OpenTelemetry traces: one trace per payment, from the HTTP request through the workflow and
its activities to the gateway call.

Off unless ``PAYTIDE_OTLP_ENDPOINT`` is set. Each process builds its own ``TracerProvider`` and
hands its tracer to whatever makes spans (the API middleware, Temporal's ``TracingInterceptor``,
the gateway activities) instead of installing a global one: tests run several stacks in one
process, each with its own exporter.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from paytide.settings import Settings

INSTRUMENTATION = "paytide"


@dataclass(frozen=True)
class Tracing:
    """A process's tracer; ``provider`` is None when tracing is off (spans cost nothing then)."""

    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @property
    def tracer(self) -> Tracer:
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(INSTRUMENTATION)

    def interceptor(self) -> TracingInterceptor | None:
        """Temporal's interceptor: spans for start, update, workflow run and each activity, and
        the trace context carried in Temporal headers from the API to the worker."""
        return TracingInterceptor(self.tracer) if self.enabled else None

    def traced_client(self, client: Client) -> Client:
        """The same connection, with the interceptor on its calls (when tracing is on)."""
        interceptor = self.interceptor()
        if interceptor is None:
            return client
        config = client.config()
        config["interceptors"] = [*config["interceptors"], interceptor]
        return Client(**config)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def tracing_with(exporter: SpanExporter, service: str) -> Tracing:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


def tracing_from_settings(settings: Settings, service: str) -> Tracing:
    """OTLP over HTTP to ``PAYTIDE_OTLP_ENDPOINT`` (a collector's base URL), or off."""
    if not settings.otlp_endpoint:
        return Tracing()
    # Imported here: only a process that exports pays for the exporter's protobuf import.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return tracing_with(OTLPSpanExporter(endpoint=endpoint), service)


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span id on every log line, so a log
    line leads to its trace and a trace to its logs."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
