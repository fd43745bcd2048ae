"""The benchmark's reading of /proc: CPU time, RSS and the process tree, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import procstat
from bench.watch import Watch


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child whose command line reads like `python -m paytide worker`."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; print(1, flush=True); time.sleep(60)",
            "paytide",
            "worker",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.readline()  # started: its interpreter is loaded
    yield child
    child.kill()
    child.wait()
    child.stdout.close()


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


def test_descendants_include_a_child_process(sleeper: subprocess.Popen[bytes]) -> None:
    """Walking the tree from this process finds the child it started, after this process."""
    found = procstat.descendants(os.getpid(), procstat.all_stats())
    assert found[0] == os.getpid()
    assert sleeper.pid in found


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
    sleeper: subprocess.Popen[bytes],
) -> None:
    """Watch finds the `paytide worker`-like child of this process and reports its peak RSS."""
    watch = Watch.of_dev(os.getpid(), {"self": os.getpid()})
    assert watch.roots == {"worker": sleeper.pid, "self": os.getpid()}
    watch.begin()
    figures = watch.end()
    assert figures["worker"].peak_rss_mib > 1
    assert figures["self"].peak_rss_mib > 1
    assert figures["worker"].cpu_seconds >= 0
