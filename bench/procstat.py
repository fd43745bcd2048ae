"""CPU time and resident memory of the stack's processes, read from Linux's /proc.

``paytide dev`` starts each service as a child; a service may have children of its own, so a
service's figures are the sum over its process subtree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, kw_only=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_seconds: float  # user + system time of the process itself (not of reaped children)


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may itself hold spaces and ')', so the
    fields are counted from the last ')'.
    """
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # After the name: state(3) ppid(4) … utime(14) stime(15), i.e. rest[0] is field 3.
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    return ProcStat(pid=pid, ppid=ppid, cpu_seconds=(utime + stime) / CLOCK_TICKS)


def parse_status_kib(text: str, key: str) -> int | None:
    """A ``kB`` figure such as ``VmRSS`` or ``VmHWM`` from /proc/<pid>/status, in KiB."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone between listing and reading


def rss_kib(pid: int) -> int:
    """Current resident set of one process; 0 once it has gone."""
    try:
        return parse_status_kib((PROC / str(pid) / "status").read_text(), "VmRSS") or 0
    except OSError:
        return 0


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            stats[stat.pid] = stat
    return stats


def descendants(root: int, stats: Mapping[int, ProcStat]) -> list[int]:
    """``root`` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return found


@dataclass(frozen=True, kw_only=True)
class Usage:
    cpu_seconds: float
    rss_kib: int


def usage(pids: Iterable[int], stats: Mapping[int, ProcStat]) -> Usage:
    listed = list(pids)
    return Usage(
        cpu_seconds=sum(stats[p].cpu_seconds for p in listed if p in stats),
        rss_kib=sum(rss_kib(p) for p in listed),
    )


def service_of(argv: list[str]) -> str | None:
    """Which service of ``paytide dev`` a command line is, or None for anything else."""
    if "start-dev" in argv:
        return "temporal"
    if "paytide" in argv:
        after = argv[argv.index("paytide") + 1 :]
        if after and after[0] in ("worker", "api", "sandbox"):
            return after[0]
    return None
