"""Drive times from many points to one, computed off the event loop on several cores.

An OSRM call holds the GIL while it computes (core.roads): an isochrone search's 256 x 1 table
(~12 ms on Malta) would stall everything else the serving process does (ingest rounds,
customers' streams) and use one core. :class:`RoadPool` splits the sources over
``road_workers`` worker processes, each with its own :class:`~core.roads.RoadNetwork` on the
same memory-mapped graph files (the pages are shared), and runs the parts at once. With
``road_workers = 0`` the same computation runs inline.

Workers are spawned (never forked from a process holding gRPC and asyncio state) when the pool
starts, and die with their parent (Linux parent-death signal) even if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from core.geo import LatLng
from core.roads import NoRoute, RoadNetwork

log = logging.getLogger(__name__)
# The worker process's road network (set by the initializer).
_ROADS: RoadNetwork | None = None
_PR_SET_PDEATHSIG = 1


def durations_to(
    roads: RoadNetwork, sources: Sequence[LatLng], destination: LatLng
) -> list[float | None]:
    """Road seconds from each source to ``destination``; None for a source with no road to
    it (or too far from any road)."""
    try:
        matrix = roads.table(sources, [destination], distances=False)
        return [row[0] for row in matrix.durations_s]
    except NoRoute:
        # One unroutable point fails the whole table: ask again one by one.
        times: list[float | None] = []
        for source in sources:
            try:
                times.append(
                    roads.table([source], [destination], distances=False).durations_s[0][0]
                )
            except NoRoute:
                times.append(None)
        return times


def _open(graph: str, max_snap_m: float | None, parent: int) -> None:
    global _ROADS
    # Not Linux: no parent-death signal; the pool's shutdown still stops the workers.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)
    _ROADS = RoadNetwork(graph, max_snap_m)


def _durations_in_worker(
    sources: list[tuple[float, float]], destination: tuple[float, float]
) -> list[float | None]:
    assert _ROADS is not None, "worker without a road network"
    return durations_to(_ROADS, [LatLng(*p) for p in sources], LatLng(*destination))


def _ready() -> bool:
    return _ROADS is not None


class RoadPool:
    """Worker processes for big many-to-one tables; see the module docstring."""

    def __init__(self, roads: RoadNetwork, workers: int) -> None:
        if workers < 0:
            raise ValueError("road_workers must be >= 0")
        self._roads = roads
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._restarting = asyncio.Lock()

    async def start(self) -> None:
        """Spawn the workers and wait until each has opened the graph."""
        if self._workers == 0:
            return
        self._executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open,
            initargs=(str(self._roads.path), self._roads.max_snap_m, os.getpid()),
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _ready) for _ in range(self._workers))
        )

    def stop(self) -> None:
        """Stop the workers (a call in progress is abandoned)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def durations_to(
        self, sources: Sequence[LatLng], destination: LatLng
    ) -> list[float | None]:
        """:func:`durations_to`, the sources split evenly over the workers."""
        executor = self._executor
        if executor is None or len(sources) < 2:
            return durations_to(self._roads, sources, destination)
        size = -(-len(sources) // self._workers)
        loop = asyncio.get_running_loop()
        try:
            parts = [
                loop.run_in_executor(
                    executor,
                    _durations_in_worker,
                    [(p.lat, p.lng) for p in sources[start : start + size]],
                    (destination.lat, destination.lng),
                )
                for start in range(0, len(sources), size)
            ]
            return [seconds for part in await asyncio.gather(*parts) for seconds in part]
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the pool cannot be used any more. Answer
            # inline and start a fresh pool for the next calls.
            async with self._restarting:
                if self._executor is executor:  # not replaced by a concurrent call already
                    log.warning("road worker died; restarting the pool")
                    self.stop()
                    await self.start()
            return durations_to(self._roads, sources, destination)
