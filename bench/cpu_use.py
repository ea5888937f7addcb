"""Who used the box's cores during a benchmark phase, read from /proc (Linux).

Every process on the box shares the same cores, the load generator included, so a latency or
throughput figure means little without the CPU beside it: a phase reports the mean cores each
group of processes used (a group is a process with all its descendants: a tracking process
with its road workers, PostgreSQL with its backends), what the benchmark's own other
descendants used (the load generator's worker processes), and how busy the whole box was.
A process that ends inside the phase (a short-lived backend) is not counted: its time went
with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
LOAD_GENERATOR = "load_generator"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _cpu(fields: list[str]) -> float:
    # After the name: state, ppid, ... utime and stime are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else _cpu(fields)


def _processes() -> dict[int, tuple[int, float]]:
    """Every process now: its parent and its CPU seconds so far, one read of its stat each."""
    found: dict[int, tuple[int, float]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                found[int(entry.name)] = (int(fields[1]), _cpu(fields))
    return found


def tree(root: int, parents: Mapping[int, int] | None = None) -> set[int]:
    """``root`` and every process descending from it."""
    if parents is None:
        parents = {pid: parent for pid, (parent, _) in _processes().items()}
    members = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in members} - members
        members |= more
        grew = bool(more)
    return members


def busy_cores_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole box so far, from /proc/stat."""
    values = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICKS_PER_S, sum(values) / _TICKS_PER_S


@dataclass
class CpuMeter:
    """Mean cores per group between :meth:`start` and :meth:`stop`; ``groups`` maps a name to
    root pids. The benchmark's other descendants count as the load generator."""

    groups: Mapping[str, Iterable[int]]
    _before: dict[int, float] = field(default_factory=dict)
    _box: tuple[float, float] = (0.0, 0.0)
    _started: float = 0.0

    def start(self) -> None:
        """Note every known process's CPU time now."""
        self._before = {pid: cpu for pid, (_, cpu) in _processes().items()}
        self._box = busy_cores_seconds()
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Mean cores of each group, of the load generator and of the whole box ("box_busy")
        since :meth:`start`."""
        wall = max(1e-9, time.monotonic() - self._started)
        now = _processes()
        parents = {pid: parent for pid, (parent, _) in now.items()}
        used: dict[str, set[int]] = {
            name: set().union(*(tree(root, parents) for root in roots))
            for name, roots in self.groups.items()
        }
        servers = set().union(*used.values()) if used else set()
        used[LOAD_GENERATOR] = tree(os.getpid(), parents) - servers - {os.getpid()}
        cores = {
            name: round(
                sum(now[pid][1] - self._before.get(pid, 0.0) for pid in pids if pid in now) / wall,
                2,
            )
            for name, pids in used.items()
        }
        busy, total = busy_cores_seconds()
        share = (busy - self._box[0]) / max(1e-9, total - self._box[1])
        cores["box_busy"] = round(share * (os.cpu_count() or 1), 2)
        return cores
