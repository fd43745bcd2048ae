"""Observability pieces that need no server: trace ids in log lines, the dashboard's latency
window, and the Grafana dashboard and Prometheus config against what paytide exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paytide.metrics import ApiMetrics, LatencyWindow, WorkerMetrics
from paytide.tracing import Tracing, add_trace_ids, tracing_with

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "dashboards" / "paytide.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
# Series names the Temporal SDK's core exports (seen on a live worker's /metrics).
SDK_SERIES = {
    "temporal_workflow_task_schedule_to_start_latency_bucket",
    "temporal_activity_schedule_to_start_latency_bucket",
    "temporal_worker_task_slots_available",
}


def _exported_names() -> set[str]:
    """Every sample name paytide's registries can expose (with the histogram suffixes)."""
    names: set[str] = set()
    for registry in (ApiMetrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
            else:
                names.add(family.name)
    return names


def test_log_lines_carry_the_current_trace_id() -> None:
    """Inside a span a log event gains trace_id and span_id; outside one it gains nothing."""
    tracing = tracing_with(InMemorySpanExporter(), "test")
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
    with tracing.tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "x"})
    context = span.get_span_context()
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    tracing.shutdown()


def test_tracing_off_makes_no_interceptor() -> None:
    """Without an exporter nothing is traced: no Temporal interceptor, spans are no-ops."""
    off = Tracing()
    assert not off.enabled
    assert off.interceptor() is None
    with off.tracer.start_as_current_span("nothing") as span:
        assert not span.get_span_context().is_valid


def test_latency_window_quantiles_are_nearest_rank_over_recent_samples() -> None:
    """p50 and p95 come from samples inside the window only; an empty window says None."""
    window = LatencyWindow(seconds=60)
    assert window.quantiles(0.5, 0.95, now=1000.0) == [None, None]
    window.add(9.0, now=900.0)  # older than the window at t=1000
    for value in range(1, 101):
        window.add(value / 1000, now=990.0)
    assert window.quantiles(0.5, 0.95, now=1000.0) == [0.05, 0.095]
    assert window.quantiles(0.5, now=2000.0) == [None]


def test_initiation_latency_keeps_refusals_out_of_the_dashboard_window() -> None:
    """Every answer goes to the histogram; only accepted initiations feed the dashboard's p50."""
    metrics = ApiMetrics()
    metrics.observe_initiation(201, 0.2)
    metrics.observe_initiation(422, 0.001)
    count = metrics.registry.get_sample_value(
        "paytide_payment_initiation_seconds_count", {"status": "422"}
    )
    assert count == 1
    assert metrics.recent_initiations.quantiles(0.5) == [0.2]


def _expressions() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_grafana_dashboard_queries_only_series_that_exist() -> None:
    """Each metric a Grafana panel queries is one paytide or the Temporal SDK exports."""
    exported = _exported_names()
    used = {
        name
        for expr in _expressions()
        for name in re.findall(r"\b((?:paytide|temporal)_[a-z_]+)\b", expr)
    }
    assert {name for name in used if name.startswith("paytide_")} <= exported
    assert {name for name in used if name.startswith("temporal_")} <= SDK_SERIES
    # The panels: outcomes, latency, gateways, webhooks, fraud, notifications, SDK.
    for needed in (
        "paytide_payments_final_total",
        "paytide_payment_initiation_seconds_bucket",
        "paytide_payment_time_to_final_seconds_bucket",
        "paytide_gateway_call_seconds_bucket",
        "paytide_webhooks_rejected_total",
        "paytide_fraud_blocks_total",
        "paytide_notification_dead_letters_total",
    ):
        assert needed in used, needed


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_prometheus_scrapes_the_api_and_worker_where_compose_serves_them() -> None:
    """The scrape targets are the compose services on the ports their settings give, and the
    API job's key file is the one compose mounts into the Prometheus container."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = _compose()["services"]
    api_port = services["paytide-api"]["environment"]["PAYTIDE_API_PORT"]
    worker_port = services["paytide-worker"]["environment"]["PAYTIDE_WORKER_METRICS_PORT"]
    assert jobs["paytide-api"]["static_configs"][0]["targets"] == [f"paytide-api:{api_port}"]
    assert jobs["paytide-worker"]["static_configs"][0]["targets"] == [
        f"paytide-worker:{worker_port}"
    ]
    assert services["paytide-worker"]["environment"]["PAYTIDE_WORKER_METRICS_HOST"] == "0.0.0.0"
    mounted = {entry["source"]: entry["target"] for entry in services["prometheus"]["configs"]}
    key_file = jobs["paytide-api"]["authorization"]["credentials_file"]
    assert mounted["prometheus-api-key"] == key_file
    assert mounted["prometheus-config"] == "/etc/prometheus/prometheus.yml"
    grafana = {entry["source"]: entry["target"] for entry in services["grafana"]["configs"]}
    assert grafana["grafana-paytide-dashboard"].endswith("/paytide.json")
    assert (ROOT / _compose()["configs"]["grafana-paytide-dashboard"]["file"]).resolve() == GRAFANA
