"""Latency percentiles: nearest-rank, the definition load-testing tools and SLOs use."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The smallest value with at least ``pct`` % of the values at or below it; None if empty.

    Nearest-rank never interpolates, so a p99 is always a latency that was actually observed.
    """
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of ``values`` (milliseconds in, milliseconds out)."""
    return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}
