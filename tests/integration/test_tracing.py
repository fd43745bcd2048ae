"""One trace per payment: the API's request span, Temporal's update-with-start, the workflow
run, the charge activity and the gateway call, exported to an in-process collector."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from paytide.settings import Settings
from paytide.tracing import tracing_from_settings, tracing_with
from tests.integration.stack import running_stack
from tests.support.serve import serve


def _parent_name(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    parent = by_id.get(span.parent.span_id)
    return parent.name if parent else None


async def test_one_trace_spans_api_workflow_activity_and_gateway(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    """A payment's spans share one trace id, from POST /payments down to the sandbox call, each
    hop the child of the one before it."""
    exporter = InMemorySpanExporter()
    tracing = tracing_with(exporter, "paytide-test")
    assert tracing.provider is not None
    async with running_stack(dev_env.client, database_url, tracing=tracing) as stack:
        created = await stack.pay()
        assert created.status_code == 201, created.text
        payment_id = created.json()["id"]
        assert (await stack.wait_final(payment_id))["status"] == "succeeded"

        # The workflow ends after the merchant is notified, a moment after the ledger says
        # succeeded: wait for its last spans too.
        wanted = {
            "POST /payments",
            "RunWorkflow:PaymentWorkflow",
            "gateway.charge",
            "HandleSignal:gateway_event",
            "CompleteWorkflow:PaymentWorkflow",
        }
        async with asyncio.timeout(10):
            while not wanted <= {span.name for span in exporter.get_finished_spans()}:
                tracing.provider.force_flush()
                await asyncio.sleep(0.1)

    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == "POST /payments"]
    trace_id = request.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    names = {s.name for s in in_trace}
    assert {
        "POST /payments",
        "StartUpdateWithStartWorkflow:PaymentWorkflow",
        "RunWorkflow:PaymentWorkflow",
        "StartActivity:charge_payment",
        "RunActivity:charge_payment",
        "gateway.charge",
        # The gateway's webhook reaches the workflow as a signal: it joins the payment's trace.
        "HandleSignal:gateway_event",
        "RunActivity:notify_merchant",
        "CompleteWorkflow:PaymentWorkflow",
    } <= names, sorted(names)

    (gateway,) = [s for s in in_trace if s.name == "gateway.charge"]
    assert _parent_name(gateway, by_id) == "RunActivity:charge_payment"
    (activity,) = [s for s in in_trace if s.name == "RunActivity:charge_payment"]
    assert _parent_name(activity, by_id) == "StartActivity:charge_payment"
    (start,) = [s for s in in_trace if s.name == "StartUpdateWithStartWorkflow:PaymentWorkflow"]
    assert _parent_name(start, by_id) == "POST /payments"
    assert request.parent is None
    assert gateway.attributes is not None and gateway.attributes["paytide.gateway"] == "sandbox"
    # The workflow's spans carry its id; no span is named after a payment.
    assert all(payment_id not in s.name for s in in_trace)


async def test_otlp_endpoint_setting_exports_spans_over_http() -> None:
    """With PAYTIDE_OTLP_ENDPOINT set, spans reach a collector's /v1/traces as OTLP protobuf;
    without it, tracing is off."""
    received: list[tuple[str, str, bytes]] = []

    async def collect(request: Request) -> Response:
        received.append(
            (request.url.path, request.headers.get("content-type", ""), await request.body())
        )
        return Response(status_code=200)

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    assert not tracing_from_settings(Settings(otlp_endpoint=""), "paytide-test").enabled
    async with serve(collector) as url:
        tracing = tracing_from_settings(Settings(otlp_endpoint=url), "paytide-test")
        assert tracing.enabled
        with tracing.tracer.start_as_current_span("exported-span"):
            pass
        # The exporter posts from its own thread; shutting down flushes the batch.
        await asyncio.to_thread(tracing.shutdown)

    assert [(path, kind) for path, kind, _ in received] == [
        ("/v1/traces", "application/x-protobuf")
    ]
    export = ExportTraceServiceRequest.FromString(received[0][2])
    names = [
        span.name
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    service = {
        attribute.value.string_value
        for resource in export.resource_spans
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert names == ["exported-span"]
    assert service == {"paytide-test"}
