"""Run seeds: one lane per time-skipping server, lanes in parallel, a report at the end."""

from __future__ import annotations

import asyncio
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from ledger.engine import create_ledger_engine, session_factory
from ledger.migrate import upgrade
from paytide.binaries import temporal_test_server
from paytide.codec import data_converter
from tests.simulation.driver import ActivitiesHook, Lane
from tests.simulation.invariants import Violation, check, replays
from tests.simulation.scenario import Scenario, draw
from workflows.dispute import DisputeWorkflow
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

WORKFLOWS: tuple[type, ...] = (PaymentWorkflow, RefundWorkflow, DisputeWorkflow)


@dataclass
class SeedResult:
    seed: int
    scenario: Scenario
    violations: list[Violation]
    seconds: float
    seen: Counter[str] = field(default_factory=Counter)
    crash: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.violations) or self.crash is not None

    def report(self) -> str:
        lines = [f"FAILED {self.scenario.describe()}"]
        if self.crash:
            lines.append(f"  the run itself failed: {self.crash}")
        lines.extend(f"  {violation}" for violation in self.violations)
        lines.append(f"  reproduce: python -m tests.simulation --seed {self.seed}")
        return "\n".join(lines)


@asynccontextmanager
async def open_lane(
    workflows: Sequence[type] = WORKFLOWS, activities_hook: ActivitiesHook | None = None
) -> AsyncIterator[Lane]:
    """A time-skipping test server (from its wheel) and a fresh SQLite ledger."""
    from tests.conftest import register_search_attributes

    with tempfile.TemporaryDirectory(prefix="paytide-sim-") as folder:
        url = f"sqlite:///{Path(folder) / 'ledger.db'}"
        engine = create_ledger_engine(url)
        upgrade(engine)
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(temporal_test_server()),
            data_converter=data_converter(None),
        )
        await register_search_attributes(env)
        try:
            yield Lane(
                env=env,
                sessions=session_factory(engine),
                workflows=workflows,
                activities_hook=activities_hook,
            )
        finally:
            await env.shutdown()
            engine.dispose()


async def run_seed(lane: Lane, scenario: Scenario) -> SeedResult:
    started = time.perf_counter()
    try:
        outcome = await lane.run(scenario)
    except Exception as error:  # a harness failure is reported with its seed, never swallowed
        return SeedResult(
            seed=scenario.seed,
            scenario=scenario,
            violations=[],
            seconds=time.perf_counter() - started,
            crash=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=-4)}",
        )
    violations = check(outcome) + await replays(outcome, lane.workflows)
    return SeedResult(
        seed=scenario.seed,
        scenario=scenario,
        violations=violations,
        seconds=time.perf_counter() - started,
        seen=outcome.seen,
    )


@dataclass
class Report:
    results: list[SeedResult]
    seconds: float

    @property
    def failures(self) -> list[SeedResult]:
        return [r for r in self.results if r.failed]

    def coverage(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for result in self.results:
            total.update(result.seen)
        return total

    def summary(self) -> str:
        lines = [
            f"{len(self.results)} seeds in {self.seconds:.1f} s, {len(self.failures)} failed",
            "",
            "| what | times |",
            "|---|---|",
        ]
        lines.extend(f"| {name} | {count} |" for name, count in sorted(self.coverage().items()))
        return "\n".join(lines)


async def run_seeds(
    seeds: Iterable[int],
    *,
    lanes: int = 2,
    workflows: Sequence[type] = WORKFLOWS,
    activities_hook: ActivitiesHook | None = None,
    progress: Callable[[SeedResult, int], None] | None = None,
    stop_at_first: bool = False,
    stop_when: Callable[[SeedResult], bool] | None = None,
    stop: asyncio.Event | None = None,
) -> Report:
    """Run ``seeds`` over ``lanes`` servers in parallel. New seeds stop being taken after the
    first that fails (``stop_at_first``) or that ``stop_when`` picks, or once ``stop`` is set;
    the report holds the seeds done."""
    queue = list(seeds)
    results: list[SeedResult] = []
    started = time.perf_counter()
    stop = stop or asyncio.Event()

    async def lane_loop() -> None:
        async with open_lane(workflows, activities_hook) as lane:
            while queue and not stop.is_set():
                result = await run_seed(lane, draw(queue.pop(0)))
                results.append(result)
                if progress:
                    progress(result, len(results))
                if (stop_at_first and result.failed) or (stop_when and stop_when(result)):
                    stop.set()

    await asyncio.gather(*(lane_loop() for _ in range(max(1, lanes))))
    results.sort(key=lambda r: r.seed)
    return Report(results=results, seconds=time.perf_counter() - started)
