"""Nearest-rank percentiles used by the benchmark's latency figures."""

from __future__ import annotations

import pytest

from bench.stats import percentile, summarize


def test_percentiles_of_one_to_a_hundred_are_the_ranks() -> None:
    """On 1..100 the p-th percentile is p: nearest rank, no interpolation."""
    values = [float(v) for v in range(100, 0, -1)]
    assert [percentile(values, p) for p in (1, 50, 95, 99, 100)] == [1.0, 50.0, 95.0, 99.0, 100.0]


def test_small_samples_round_the_rank_up() -> None:
    """With 10 values p95 and p99 are the largest, p50 the fifth: ranks are rounded up."""
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 10.0, 4.0, 8.0, 6.0]
    assert summarize(values) == {"p50": 5.0, "p95": 10.0, "p99": 10.0}


def test_a_percentile_is_always_an_observed_value() -> None:
    """Between two samples the percentile picks one of them, never a value in between."""
    assert percentile([10.0, 20.0], 50) == 10.0
    assert percentile([10.0, 20.0], 51) == 20.0


def test_no_samples_give_no_percentile() -> None:
    """An empty phase reports None rather than a made-up zero."""
    assert summarize([]) == {"p50": None, "p95": None, "p99": None}


@pytest.mark.parametrize("pct", [0, -1, 100.5])
def test_percentile_outside_the_range_is_refused(pct: float) -> None:
    """Percentiles outside (0, 100] are a caller's mistake and raise ValueError."""
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], pct)
