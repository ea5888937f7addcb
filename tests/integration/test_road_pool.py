"""Drive times in road worker processes: the same answers as inline, unroutable points as
None, a dead worker replaced, and no worker outliving its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.geo import LatLng
from core.road_pool import RoadPool, durations_to, snap_each
from core.roads import RoadNetwork
from tests.helpers import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CENTER = LatLng(35.8960, 14.5110)  # Valletta, City Gate
OPEN_SEA = LatLng(36.5, 14.0)
# A diagonal from Mdina to past Valletta, every point moved onto its nearest road.
GRID = [LatLng(35.88 + i * 0.0005, 14.40 + i * 0.003) for i in range(40)]


@pytest.fixture(scope="module")
def sources(roads: RoadNetwork) -> list[LatLng]:
    return [roads.nearest(p).location for p in GRID]


async def test_workers_answer_as_the_inline_computation(
    roads: RoadNetwork, sources: list[LatLng]
) -> None:
    pool = RoadPool(roads, 2)
    await pool.start()
    try:
        with_sea = [*sources[:20], OPEN_SEA, *sources[20:]]
        inline = durations_to(roads, with_sea, CENTER)
        assert inline[20] is None  # no road within reach of the open sea
        assert all(t is not None and t > 0 for i, t in enumerate(inline) if i != 20)
        assert await pool.durations_to(with_sea, CENTER) == inline
        assert await pool.durations_to(sources[:1], CENTER) == inline[:1]
        # Drivers at one spot are routed once, and each still gets its time.
        crowded = [sources[3]] * 4 + sources + [OPEN_SEA, sources[3], OPEN_SEA]
        assert await pool.durations_to(crowded, CENTER) == durations_to(roads, crowded, CENTER)
    finally:
        pool.stop()


async def test_workers_are_batch_scheduled_and_pinned_when_cpus_are_as_many(
    roads: RoadNetwork,
) -> None:
    allowed = os.sched_getaffinity(0)
    two = sorted(allowed)[:2]
    assert len(two) == 2, "this test needs a machine with at least 2 CPUs"
    os.sched_setaffinity(0, two)  # the workers' parent may run on exactly 2 CPUs
    pinned, free = RoadPool(roads, 2), RoadPool(roads, 1)
    try:
        await pinned.start()
        await free.start()
        pids = pinned.worker_pids() + free.worker_pids()
        assert {os.sched_getscheduler(pid) for pid in pids} == {os.SCHED_BATCH}
        assert [os.sched_getaffinity(pid) for pid in pinned.worker_pids()] == [{c} for c in two]
        # Fewer workers than CPUs: where each runs is left to the scheduler.
        assert os.sched_getaffinity(free.worker_pids()[0]) == set(two)
    finally:
        pinned.stop()
        free.stop()
        os.sched_setaffinity(0, allowed)


async def test_workers_snap_as_the_inline_computation(roads: RoadNetwork) -> None:
    pool = RoadPool(roads, 2)
    await pool.start()
    try:
        points = [*GRID[:20], OPEN_SEA, *GRID[20:]]
        loose = snap_each(roads, points, 900.0)
        assert loose[20] is None  # no road within reach of the open sea
        assert loose[:20] + loose[21:] == [roads.nearest(p).location for p in GRID]
        strict = snap_each(roads, points, 10.0)
        assert strict.count(None) > loose.count(None)  # some raw points are off the road
        assert await pool.snap_each(points, 900.0) == loose
        assert await pool.snap_each(points, 10.0) == strict
        # A long path goes a block at a time (2 workers x 2,000 points); same answers, in order.
        assert await pool.snap_each(points * 110, 900.0) == loose * 110
    finally:
        pool.stop()


async def test_a_killed_worker_is_replaced(roads: RoadNetwork, sources: list[LatLng]) -> None:
    pool = RoadPool(roads, 2)
    await pool.start()
    try:
        expected = durations_to(roads, sources, CENTER)
        victim = pool.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not _alive(victim), 10.0, what="worker killed")
        assert await pool.durations_to(sources, CENTER) == expected  # answered inline
        assert len(pool.worker_pids()) == 2 and victim not in pool.worker_pids()
        assert await pool.durations_to(sources, CENTER) == expected  # by the new workers
    finally:
        pool.stop()


async def test_no_workers_means_inline(roads: RoadNetwork, sources: list[LatLng]) -> None:
    pool = RoadPool(roads, 0)
    await pool.start()
    assert await pool.durations_to(sources, CENTER) == durations_to(roads, sources, CENTER)
    assert await pool.snap_each(GRID * 60, 900.0) == snap_each(roads, GRID, 900.0) * 60
    with pytest.raises(ValueError):
        RoadPool(roads, -1)


_PARENT = """
import asyncio, os, sys
from core.road_pool import RoadPool
from core.roads import RoadNetwork

async def main():
    pool = RoadPool(RoadNetwork(sys.argv[1]), 2)
    await pool.start()
    print(" ".join(str(p) for p in pool.worker_pids()), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_die_with_a_killed_parent(road_graph: Path, tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(road_graph)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: not any(_alive(pid) for pid in workers), 10.0, what="workers gone")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
