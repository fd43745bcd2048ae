"""The benchmark's table and JSON, from phases built by hand."""

from __future__ import annotations

import json

from bench.phase import Phase
from bench.report import (
    breakdown,
    document,
    phase_record,
    table,
    task_steps,
    throughput_ratio,
)
from bench.watch import ServiceFigures


def _phases() -> list[Phase]:
    engine = Phase(
        "engine",
        "saturation",
        clients=8,
        first_ms=[40.0, 50.0, 60.0, 70.0],
        settle_ms=[100.0, 110.0, 120.0, 130.0],
        seconds=0.2,
        load_average=2.5,
        services={"temporal": ServiceFigures(cpu_seconds=0.4, peak_rss_mib=200.0)},
    )
    paytide = Phase(
        "paytide",
        "saturation",
        clients=8,
        first_ms=[150.0, 250.0],
        settle_ms=[300.0, 400.0],
        errors=1,
        seconds=0.4,
        load_average=3.0,
        services={
            "temporal": ServiceFigures(cpu_seconds=0.3, peak_rss_mib=210.0),
            "worker": ServiceFigures(cpu_seconds=0.2, peak_rss_mib=130.5),
        },
    )
    fixed = Phase("paytide", "fixed-rate", target_rate=2.5, seconds=1.0)
    return [engine, paytide, fixed]


def test_ratio_is_paytide_saturation_over_engine_saturation() -> None:
    """20 engine payments/s against 5 paytide payments/s is a ratio of 0.25."""
    assert throughput_ratio(_phases()) == 0.25


def test_no_ratio_without_an_engine_phase() -> None:
    """Without an engine saturation phase there is nothing to divide by."""
    assert throughput_ratio(_phases()[1:]) is None


def test_phase_record_has_percentiles_and_cpu_per_payment() -> None:
    """A phase's record carries its percentiles, rate, errors and CPU ms per succeeded payment."""
    record = phase_record(_phases()[1])
    assert record["phase"] == "paytide saturation x8"
    assert record["first_answer_ms"] == {"p50": 150.0, "p95": 250.0, "p99": 250.0}
    assert record["payments_per_s"] == 5.0
    assert record["errors"] == 1
    assert record["services"]["worker"] == {
        "cpu_seconds": 0.2,
        "peak_rss_mib": 130.5,
        "cpu_ms_per_payment": 100.0,
    }


def test_table_shows_every_phase_its_figures_and_the_ratio() -> None:
    """The printed table has one row per phase, the latencies, the services and the ratio."""
    text = table(_phases())
    lines = text.splitlines()
    assert any(line.startswith("paytide fixed-rate 2.5/s") for line in lines)
    engine_row = next(line for line in lines if line.startswith("engine saturation x8")).split()
    assert engine_row[3:12] == ["4", "0", "50", "70", "70", "110", "130", "130", "20.0"]
    assert "0.2s (100) / 130" in text  # worker: CPU, ms per payment, peak RSS
    assert text.rstrip().endswith("0.25 (25 %)")


def test_empty_phase_renders_dashes_not_zeros() -> None:
    """A phase with no payments shows '-' for its latencies in the table and None in JSON."""
    fixed = _phases()[2]
    row = next(line for line in table([fixed]).splitlines() if line.startswith("paytide fixed"))
    assert row.split()[5:11] == ["-"] * 6
    assert phase_record(fixed)["succeeded_ms"]["p99"] is None


def test_json_document_round_trips_with_raw_latencies() -> None:
    """The --json document is valid JSON with setup, phases, ratio, history and raw samples."""
    setup = {"command": "python -m bench", "machine": {"nproc": 2}}
    doc = json.loads(
        json.dumps(document(_phases(), setup=setup, history={"paytide": {"events": 38}}))
    )
    assert doc["setup"] == setup
    assert [p["phase"] for p in doc["phases"]] == [
        "engine saturation x8",
        "paytide saturation x8",
        "paytide fixed-rate 2.5/s",
    ]
    assert doc["throughput_ratio_paytide_over_engine"] == 0.25
    assert doc["history_per_payment"] == {"paytide": {"events": 38}}
    assert doc["raw_ms"]["paytide saturation x8"] == {
        "first": [150.0, 250.0],
        "succeeded": [300.0, 400.0],
    }


TIMELINE = [
    [0.0, "WORKFLOW_EXECUTION_STARTED"],
    [0.1, "WORKFLOW_TASK_SCHEDULED"],
    [5.0, "WORKFLOW_TASK_STARTED"],
    [55.0, "WORKFLOW_TASK_COMPLETED"],
    [56.6, "MARKER_RECORDED"],
    [61.7, "ACTIVITY_TASK_SCHEDULED charge_payment"],
    [61.8, "ACTIVITY_TASK_STARTED"],
    [79.3, "ACTIVITY_TASK_COMPLETED"],
    [79.3, "WORKFLOW_TASK_SCHEDULED"],
    [82.0, "WORKFLOW_TASK_STARTED"],
    [109.9, "WORKFLOW_TASK_COMPLETED"],
    [110.9, "WORKFLOW_EXECUTION_UPDATE_COMPLETED"],
    [120.0, "WORKFLOW_EXECUTION_COMPLETED"],
]


def test_task_steps_split_each_task_into_wait_and_run() -> None:
    """Workflow tasks and activities come out in order with their queue wait and run time."""
    steps = task_steps(TIMELINE)
    assert [(s["step"], s["wait_ms"], s["run_ms"]) for s in steps] == [
        ("workflow task", 4.9, 50.0),
        ("charge_payment", 0.1, 17.5),
        ("workflow task", 2.7, 27.9),
    ]


def test_breakdown_names_when_the_update_returned() -> None:
    """The one-line breakdown lists the tasks and the time the API's update returned."""
    line = breakdown({"events": 13, "timeline_ms": TIMELINE})
    assert line.startswith("13 events; workflow task 5+50, charge_payment 0+18")
    assert "update returned at 110.9 ms, workflow closed at 120.0 ms" in line
