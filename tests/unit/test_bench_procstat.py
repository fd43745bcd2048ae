"""The benchmark's reading of /proc: CPU time, RSS and the process tree, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import procstat
from bench.watch import Watch


@pytest.fixture
def fake_dev() -> Iterator[tuple[int, int]]:
    """A process standing for `paytide dev`, with one child whose command line reads like
    `python -m paytide worker`; yields both pids."""
    child_code = "import time; print(1, flush=True); time.sleep(60)"
    parent_code = (
        "import subprocess, sys; "
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}, 'paytide', 'worker']).wait()"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    parent.stdout.readline()  # the child has started and inherited this pipe
    children = [s.pid for s in procstat.all_stats().values() if s.ppid == parent.pid]
    try:
        assert len(children) == 1
        yield parent.pid, children[0]
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()


def test_stat_of_this_process_names_it_and_its_parent() -> None:
    """/proc/self/stat parses to this pid, its parent and a positive CPU time."""
    stat = procstat.parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert stat.cpu_seconds > 0


def test_stat_with_spaces_and_parentheses_in_the_name() -> None:
    """A command name holding ') ' does not shift the fields read after it."""
    fields = ["S", "42"] + ["0"] * 9 + [str(3 * procstat.CLOCK_TICKS), str(procstat.CLOCK_TICKS)]
    line = "123 (evil) name (x)) " + " ".join(fields + ["0"] * 30)
    stat = procstat.parse_stat(line)
    assert (stat.pid, stat.ppid, stat.cpu_seconds) == (123, 42, 4.0)


def test_status_of_this_process_has_a_resident_set_and_its_peak() -> None:
    """VmRSS and VmHWM come out of the real /proc/self/status in KiB; the peak is not below it."""
    text = Path(f"/proc/{os.getpid()}/status").read_text()
    rss = procstat.parse_status_kib(text, "VmRSS")
    peak = procstat.parse_status_kib(text, "VmHWM")
    assert rss is not None and peak is not None
    assert 1024 < rss <= peak
    assert procstat.parse_status_kib(text, "NoSuchKey") is None


def test_descendants_include_children_and_grandchildren(fake_dev: tuple[int, int]) -> None:
    """Walking the real tree from this process finds its child and grandchild, in that order."""
    parent, child = fake_dev
    found = procstat.descendants(os.getpid(), procstat.all_stats())
    assert found[0] == os.getpid()
    assert found.index(parent) < found.index(child)


def test_descendants_of_a_synthetic_tree() -> None:
    """Grandchildren are found; processes outside the subtree are not."""
    stats = {
        pid: procstat.ProcStat(pid=pid, ppid=ppid, cpu_seconds=1.0)
        for pid, ppid in [(1, 0), (10, 1), (11, 10), (12, 11), (20, 1), (21, 20)]
    }
    assert procstat.descendants(10, stats) == [10, 11, 12]
    assert procstat.usage([10, 11, 12], stats).cpu_seconds == 3.0


@pytest.mark.parametrize(
    ("argv", "service"),
    [
        (["/x/temporal", "server", "start-dev", "--ip", "127.0.0.1"], "temporal"),
        (["/x/python", "-m", "paytide", "worker"], "worker"),
        (["/x/python", "-m", "paytide", "api"], "api"),
        (["/x/python", "-m", "paytide", "sandbox"], "sandbox"),
        (["/x/python", "-m", "paytide", "db", "upgrade"], None),
        (["/bin/sleep", "5"], None),
    ],
)
def test_service_of_a_command_line(argv: list[str], service: str | None) -> None:
    """The stack's four services are told apart by their command lines; others are ignored."""
    assert procstat.service_of(argv) == service


def test_watch_finds_a_service_below_its_parent_and_measures_it(
    fake_dev: tuple[int, int],
) -> None:
    """Watch finds the `paytide worker`-like child of the fake `paytide dev` and reports its
    peak RSS; this process, watched alone, is measured without its children."""
    parent, child = fake_dev
    watch = Watch.of_dev(parent, {}, solo={"self": os.getpid()})
    assert watch.roots == {"worker": child}
    watch.begin()
    figures = watch.end()
    assert set(figures) == {"worker", "self"}
    assert figures["worker"].peak_rss_mib > 1
    assert figures["self"].peak_rss_mib > 1
    assert figures["worker"].cpu_seconds >= 0
