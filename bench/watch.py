"""Per-phase CPU seconds and peak RSS of each service, sampled while a phase runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bench import procstat


@dataclass
class ServiceFigures:
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0


@dataclass
class Watch:
    """Services by name with their root pid; figures cover each root's whole subtree."""

    roots: Mapping[str, int]
    # Measured without their children (the benchmark's own process is the stack's ancestor).
    solo: Mapping[str, int] = field(default_factory=dict)
    _cpu_at_start: dict[str, float] = field(default_factory=dict)
    _peak_kib: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_dev(
        cls, dev_pid: int, extra: Mapping[str, int], solo: Mapping[str, int] | None = None
    ) -> Watch:
        """The services `paytide dev` (``dev_pid``) started, found in its process tree."""
        stats = procstat.all_stats()
        roots = {
            name: stat.pid
            for stat in stats.values()
            if stat.ppid == dev_pid and (name := procstat.service_of(procstat.cmdline(stat.pid)))
        }
        return cls(roots={**roots, **extra}, solo=dict(solo or {}))

    def _usage(self) -> dict[str, procstat.Usage]:
        stats = procstat.all_stats()
        trees = {
            name: procstat.usage(procstat.descendants(pid, stats), stats)
            for name, pid in self.roots.items()
        }
        return trees | {name: procstat.usage([pid], stats) for name, pid in self.solo.items()}

    def begin(self) -> None:
        self._cpu_at_start = {name: u.cpu_seconds for name, u in self._usage().items()}
        self._peak_kib = {}
        self.sample()

    def sample(self) -> None:
        for name, figures in self._usage().items():
            self._peak_kib[name] = max(self._peak_kib.get(name, 0), figures.rss_kib)

    def end(self) -> dict[str, ServiceFigures]:
        self.sample()
        return {
            name: ServiceFigures(
                cpu_seconds=round(u.cpu_seconds - self._cpu_at_start.get(name, 0.0), 2),
                peak_rss_mib=round(self._peak_kib.get(name, 0) / 1024, 1),
            )
            for name, u in self._usage().items()
        }
