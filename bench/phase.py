"""One measured phase: what the clients saw, and what each service spent meanwhile."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.watch import ServiceFigures, Watch


@dataclass
class Phase:
    system: str  # "engine" (the bare workflow) or "paytide"
    name: str  # "sequential", "fixed-rate", "saturation"
    clients: int = 1
    target_rate: float | None = None  # payments/s sent, for an open-loop phase
    # Start until the first answer: POST /payments answered, or the update returned.
    first_ms: list[float] = field(default_factory=list)
    # Start until the payment read `succeeded` (or the bare workflow completed).
    settle_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    load_average: float = 0.0
    services: dict[str, ServiceFigures] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.target_rate is not None:
            return f"{self.system} {self.name} {self.target_rate:g}/s"
        if self.clients > 1:
            return f"{self.system} {self.name} x{self.clients}"
        return f"{self.system} {self.name}"

    @property
    def per_second(self) -> float:
        return len(self.settle_ms) / self.seconds if self.seconds else 0.0


def load_average(path: Path = Path("/proc/loadavg")) -> float:
    """The one-minute load average."""
    return float(path.read_text().split()[0])


async def measure(phase: Phase, work: Coroutine[Any, Any, None], watch: Watch) -> Phase:
    """Run ``work`` (which fills ``phase``) with one updating progress line and sampling."""
    watch.begin()
    started = time.perf_counter()
    task = asyncio.create_task(work)
    while not task.done():
        watch.sample()
        elapsed = time.perf_counter() - started
        sys.stdout.write(
            f"\r  {phase.label}: {elapsed:5.1f}s, {len(phase.first_ms)} answered, "
            f"{len(phase.settle_ms)} succeeded, {phase.errors} errors   "
        )
        sys.stdout.flush()
        await asyncio.wait({task}, timeout=0.5)
    task.result()
    phase.seconds = time.perf_counter() - started
    phase.services = watch.end()
    phase.load_average = load_average()
    done = f"done in {phase.seconds:.1f}s, {len(phase.settle_ms)} succeeded, {phase.errors} errors"
    sys.stdout.write(f"\r  {phase.label}: {done}" + " " * 20 + "\n")
    sys.stdout.flush()
    return phase
