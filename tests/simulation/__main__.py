"""``python -m tests.simulation``: run seeds and report; ``--seed N`` reproduces one.

Examples::

    python -m tests.simulation --seeds 10000 --lanes 2   # seeds 0..9999
    python -m tests.simulation --seed 4711               # one seed, its scenario and findings
    python -m tests.simulation --seed 4711 --shrink      # and its smallest failing scenario
    python -m tests.simulation --plant key-per-try       # the first budget seed finding a bug
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from tests.simulation.invariants import TITLES
from tests.simulation.planted import BUDGET, PLANTS, Plant, search
from tests.simulation.run import WORKFLOWS, SeedResult, open_lane, run_seed, run_seeds
from tests.simulation.scenario import draw
from tests.simulation.shrink import shrink


def _quiet_logs() -> None:
    # Activity failures are the point of the simulation; their tracebacks are noise here.
    for name in ("temporalio", "paytide", "activities", "gateways", "ledger", "workflows"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation", description=__doc__)
    parser.add_argument("--seed", type=int, help="run this one seed and print its scenario")
    parser.add_argument(
        "--seeds", type=int, help=f"how many seeds (default 300; {len(BUDGET)} with --plant)"
    )
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--lanes", type=int, default=2, help="servers in parallel (default 2)")
    parser.add_argument("--shrink", action="store_true", help="shrink a failing --seed")
    parser.add_argument(
        "--plant",
        choices=sorted(PLANTS),
        help="with a planted bug (tests/simulation/planted.py): run the budget until the first "
        "seed that finds it, or run --seed with it",
    )
    args = parser.parse_args(argv)
    _quiet_logs()
    plant = PLANTS[args.plant] if args.plant else None
    if args.seed is not None:
        return asyncio.run(_one(args.seed, shrink_it=args.shrink, plant=plant))
    seeds = range(args.start, args.start + (args.seeds or (len(BUDGET) if plant else 300)))
    if plant is not None:
        return asyncio.run(_find(plant, seeds, args.lanes))
    return asyncio.run(_many(seeds, args.lanes))


async def _one(seed: int, *, shrink_it: bool, plant: Plant | None = None) -> int:
    scenario = draw(seed)
    print(scenario.describe(), flush=True)
    workflows = plant.workflows if plant else WORKFLOWS
    async with open_lane(workflows, plant.activities_hook if plant else None) as lane:
        result = await run_seed(lane, scenario)
        if not result.failed:
            print(f"seed {seed}: every invariant held ({result.seconds:.1f} s)")
            return 0
        print(result.report())
        if plant is not None:
            print(f"  with the bug: python -m tests.simulation --seed {seed} --plant {plant.name}")
        if shrink_it:
            print("shrinking…", flush=True)
            smallest = await shrink(lane, result, progress=lambda line: print(f"  {line}"))
            print("smallest failing scenario:")
            print(smallest.report())
    return 1


async def _many(seeds: range, lanes: int) -> int:
    started = time.perf_counter()
    total = len(seeds)

    def progress(result: SeedResult, done: int) -> None:
        if result.failed:
            print(result.report(), flush=True)
        if done % 50 == 0 or done == total:
            rate = done / (time.perf_counter() - started)
            print(f"[sim] {done}/{total} seeds, {rate:.1f}/s", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Stop after the seeds in flight and still print the report of those done.
        loop.add_signal_handler(signum, stop.set)
    report = await run_seeds(seeds, lanes=lanes, progress=progress, stop=stop)
    print(report.summary())
    for failure in report.failures:
        print(f"failed: seed {failure.seed} (python -m tests.simulation --seed {failure.seed})")
    return 1 if report.failures else 0


async def _find(plant: Plant, seeds: range, lanes: int) -> int:
    """Run ``seeds`` in order with ``plant`` until the first that finds it."""
    print(
        f"planted {plant.name}: {plant.bug}; invariant {plant.invariant} "
        f"({TITLES[plant.invariant]}) must find it in seeds {seeds.start}..{seeds.stop - 1}",
        flush=True,
    )

    def progress(result: SeedResult, done: int) -> None:
        if done % 50 == 0:
            print(f"[sim] {done} seeds run", flush=True)

    found, report = await search(plant, seeds, lanes=lanes, progress=progress)
    if found is None:
        print(f"not found: {len(report.results)} seeds in {report.seconds:.1f} s")
        return 1
    print(found.report())
    print(f"  with the bug: python -m tests.simulation --seed {found.seed} --plant {plant.name}")
    print(
        f"found by seed {found.seed}, the first of seeds {seeds.start}..{seeds.stop - 1} that "
        f"finds it ({len(report.results)} seeds run in {report.seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
