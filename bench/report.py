"""The benchmark's figures as a text table and as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.phase import Phase
from bench.stats import summarize

SERVICES = ("temporal", "worker", "api", "sandbox", "bare_worker", "bench")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def phase_record(phase: Phase) -> dict[str, Any]:
    """Everything about one phase, with per-payment CPU for each service."""
    done = len(phase.settle_ms)
    return {
        "phase": phase.label,
        "system": phase.system,
        "kind": phase.name,
        "clients": phase.clients,
        "target_rate": phase.target_rate,
        "succeeded": done,
        "errors": phase.errors,
        "seconds": round(phase.seconds, 2),
        "payments_per_s": round(phase.per_second, 2),
        "first_answer_ms": summarize(phase.first_ms),
        "succeeded_ms": summarize(phase.settle_ms),
        "load_average_1m": phase.load_average,
        "services": {
            name: {
                **asdict(figures),
                "cpu_ms_per_payment": round(figures.cpu_seconds * 1000 / done, 1) if done else None,
            }
            for name, figures in phase.services.items()
        },
    }


def throughput_ratio(phases: Sequence[Phase]) -> float | None:
    """paytide's saturated payments/s over the bare workflow's, in the same run."""
    rates = {p.system: p.per_second for p in phases if p.name == "saturation"}
    if not rates.get("engine") or "paytide" not in rates:
        return None
    return rates["paytide"] / rates["engine"]


def table(phases: Sequence[Phase]) -> str:
    """Latency and throughput per phase, then CPU and peak RSS per service and phase."""
    head = (
        f"{'phase':<28} {'ok':>5} {'err':>4} {'1st p50':>8} {'p95':>6} {'p99':>6} "
        f"{'done p50':>8} {'p95':>6} {'p99':>6} {'pay/s':>7} {'load':>5}"
    )
    lines = [
        "latency in ms; 1st = POST /payments answered (engine: update returned); "
        "done = payment read `succeeded` (engine: workflow completed)",
        head,
        "-" * len(head),
    ]
    for phase in phases:
        first, done = summarize(phase.first_ms), summarize(phase.settle_ms)
        lines.append(
            f"{phase.label:<28} {len(phase.settle_ms):>5} {phase.errors:>4} "
            f"{_ms(first['p50']):>8} {_ms(first['p95']):>6} {_ms(first['p99']):>6} "
            f"{_ms(done['p50']):>8} {_ms(done['p95']):>6} {_ms(done['p99']):>6} "
            f"{phase.per_second:>7.1f} {phase.load_average:>5.2f}"
        )
    lines += ["", "CPU seconds (ms per succeeded payment) / peak RSS MiB, per process tree"]
    present = [s for s in SERVICES if any(s in p.services for p in phases)]
    lines.append(f"{'phase':<28} " + " ".join(f"{s:>22}" for s in present))
    for phase in phases:
        record = phase_record(phase)["services"]
        cells = []
        for service in present:
            figures = record.get(service)
            if figures is None:
                cells.append(f"{'-':>22}")
                continue
            per = figures["cpu_ms_per_payment"]
            cell = (
                f"{figures['cpu_seconds']:.1f}s ({'-' if per is None else f'{per:.0f}'}) "
                f"/ {figures['peak_rss_mib']:.0f}"
            )
            cells.append(f"{cell:>22}")
        lines.append(f"{phase.label:<28} " + " ".join(cells))
    ratio = throughput_ratio(phases)
    lines.append("")
    lines.append(
        "throughput paytide / engine baseline (saturation): "
        + ("-" if ratio is None else f"{ratio:.2f} ({ratio * 100:.0f} %)")
    )
    return "\n".join(lines)


def document(
    phases: Sequence[Phase], *, setup: dict[str, Any], history: dict[str, Any]
) -> dict[str, Any]:
    """The JSON written by ``--json``: setup, each phase, the ratio, and raw latencies."""
    ratio = throughput_ratio(phases)
    return {
        "setup": setup,
        "phases": [phase_record(p) for p in phases],
        "throughput_ratio_paytide_over_engine": None if ratio is None else round(ratio, 3),
        "history_per_payment": history,
        "raw_ms": {
            p.label: {
                "first": [round(v, 2) for v in p.first_ms],
                "succeeded": [round(v, 2) for v in p.settle_ms],
            }
            for p in phases
        },
    }


def task_steps(timeline: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each workflow task and activity of one history: how long it waited to be picked up
    (scheduled → started) and how long it ran (started → completed), in history order.

    ``timeline`` is ``[ms since start, event name]`` per event, as ``python -m bench`` records it.
    """
    steps: list[dict[str, Any]] = []
    open_steps: dict[str, dict[str, Any]] = {}
    for at, name in timeline:
        kind, _, rest = str(name).partition("_TASK_")
        if kind not in ("WORKFLOW", "ACTIVITY") or not rest:
            continue
        stage, _, activity = rest.partition(" ")
        if stage == "SCHEDULED":
            step = {"step": activity or "workflow task", "scheduled": at}
            open_steps[kind] = step
            steps.append(step)
        elif stage == "STARTED" and kind in open_steps:
            open_steps[kind]["started"] = at
        elif stage == "COMPLETED" and kind in open_steps:
            step = open_steps.pop(kind)
            step["wait_ms"] = round(step.pop("started", at) - step["scheduled"], 1)
            step["run_ms"] = round(at - step["scheduled"] - step["wait_ms"], 1)
            step["at_ms"] = step.pop("scheduled")
    return [s for s in steps if "run_ms" in s]


def breakdown(history: dict[str, Any]) -> str:
    """One line: each task's wait+run in ms, and when the update (the API's answer) returned."""
    timeline = history.get("timeline_ms", [])
    parts = [f"{s['step']} {s['wait_ms']:.0f}+{s['run_ms']:.0f}" for s in task_steps(timeline)]
    answered = next(
        (at for at, name in timeline if name == "WORKFLOW_EXECUTION_UPDATE_COMPLETED"), None
    )
    end = timeline[-1][0] if timeline else None
    return (
        f"{history.get('events', '?')} events; "
        + ", ".join(parts)
        + f"; update returned at {answered} ms, workflow closed at {end} ms"
    )
