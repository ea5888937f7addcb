"""The benchmark's CPU accounting reads real processes from /proc: a busy child shows up in its
group with its descendants, the benchmark's other children as the load generator."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu_use import LOAD_GENERATOR, CpuMeter, cpu_seconds, tree

# A parent that starts a busy grandchild, then both spin for ``seconds``.
_SPIN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nend = time.time() + {s}\\nwhile time.time() < end: pass"])
end = time.time() + {s}
while time.time() < end:
    pass
child.wait()
"""


def _spin(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _SPIN.format(s=seconds)])


def test_a_busy_process_tree_is_counted_in_its_group_and_the_rest_as_load() -> None:
    server, load = _spin(2.0), _spin(2.0)
    try:
        meter = CpuMeter({"server": [server.pid]})
        meter.start()
        time.sleep(1.0)
        cores = meter.stop()  # while they spin: a process that is gone is not counted
    finally:
        server.wait()
        load.wait()

    # Two spinning processes in each tree, sharing this box's cores.
    assert cores["server"] > 0.3, cores
    assert cores[LOAD_GENERATOR] > 0.3, cores
    assert 0.5 < cores["box_busy"] <= (os.cpu_count() or 1) + 0.01, cores


def test_tree_and_cpu_seconds_of_a_living_process() -> None:
    process = _spin(0.6)
    try:
        time.sleep(0.3)
        assert process.pid in tree(process.pid)
        assert len(tree(process.pid)) == 2  # the parent and its spinning child
        assert cpu_seconds(process.pid) > 0.0
    finally:
        process.wait()
    assert cpu_seconds(process.pid) == 0.0  # gone (reaped): nothing left to read
