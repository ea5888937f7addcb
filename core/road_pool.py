"""Road work over many points (drive times to one point, snapping each point), computed off
the event loop on several cores.

An OSRM call holds the GIL while it computes (core.roads): an isochrone search's 256 x 1 table
(~12 ms on Malta) or a stored path's thousands of snaps would stall everything else the serving
process does (ingest rounds, customers' streams) and use one core. :class:`RoadPool` splits the
points over ``road_workers`` worker processes, each with its own
:class:`~core.roads.RoadNetwork` on the same memory-mapped graph files (the pages are shared),
and runs the parts at once. With ``road_workers = 0`` the same computation runs inline.

The parts only run at once if the scheduler lets them: workers are batch-scheduled and, on a
box with as many CPUs as workers, pinned one per CPU. Without that, a 2-core box often ran
the parts one after the other (a woken worker preempting the process about to send the next
part, or two parts queued on one core): p99 of a 256 x 1 table over 2 workers 17-19 ms
instead of 12-13, measured outside any service.

Each worker answers requests on its own pipe, read by the event loop directly: no executor
threads between the loop and the workers (``concurrent.futures``' hand-offs between threads
cost more than the table's parallel gain on a loaded box). Workers are spawned (never forked
from a process holding gRPC and asyncio state), replaced when one dies (its part is then
computed inline), and die with their parent (Linux parent-death signal) even if it is
SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from core.geo import LatLng
from core.roads import NoRoute, RoadNetwork

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_READY = "ready"
# Points per worker in one block of a long snap_each (~40 us a point: ~0.1 s a block).
_SNAP_BLOCK = 2000
_STOP_GRACE_S = 2.0


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


def snap_each(
    roads: RoadNetwork, points: Sequence[LatLng], max_distance_m: float
) -> list[LatLng | None]:
    """Each point on its nearest road, None where no road lies within ``max_distance_m``."""
    return [roads.snap(point, max_distance_m) for point in points]


def _durations_part(
    roads: RoadNetwork, points: list[LatLng], destination: tuple[float, float]
) -> Any:
    return durations_to(roads, points, LatLng(*destination))


def _snap_part(roads: RoadNetwork, points: list[LatLng], max_distance_m: float) -> Any:
    return [None if p is None else (p.lat, p.lng) for p in snap_each(roads, points, max_distance_m)]


# What a worker can be asked: (name, points as (lat, lng) pairs, one extra argument), the
# argument and the answer in plain values (a pipe pickles them faster than dataclasses). A
# part whose worker died is computed inline by the same function.
_Operation = Callable[[RoadNetwork, list[LatLng], Any], Any]
_OPERATIONS: dict[str, _Operation] = {"durations_to": _durations_part, "snap_each": _snap_part}


def _settle_scheduling(cpu: int | None) -> None:
    """Batch scheduling: a worker woken by a request does not preempt the serving process that
    sent it (which would then send the other parts late, a scheduler tick later). Pinned to
    ``cpu`` when given, so that two parts never queue on one core while another idles."""
    # Not Linux: default scheduling; the pool works the same, with a slower tail.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if cpu is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {cpu})


def _serve(
    conn: Connection, graph: str, max_snap_m: float | None, parent: int, cpu: int | None
) -> None:
    """A worker's life: open the graph, then answer (operation, points, argument) until EOF."""
    # Not Linux: no parent-death signal; the pool's stop still ends the workers (EOF).
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _settle_scheduling(cpu)
    if os.getppid() != parent:  # the parent died before the signal was armed
        return
    roads = RoadNetwork(graph, max_snap_m)
    conn.send(_READY)
    while True:
        try:
            name, pairs, argument = conn.recv()
        except (EOFError, OSError):
            return
        points = [LatLng(lat, lng) for lat, lng in pairs]
        conn.send(_OPERATIONS[name](roads, points, argument))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection


class RoadPool:
    """Worker processes for big many-to-one tables; see the module docstring."""

    def __init__(self, roads: RoadNetwork, workers: int) -> None:
        if workers < 0:
            raise ValueError("road_workers must be >= 0")
        self._roads = roads
        self._size = workers
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()

    async def start(self) -> None:
        """Spawn the workers and wait until each has opened the graph."""
        for index in range(self._size):
            worker = self._spawn(index)
            if await self._answer(worker) != _READY:
                raise RuntimeError("road worker failed to start")
            self._workers.append(worker)
            self._idle.put_nowait(worker)

    def stop(self) -> None:
        """End the workers: they see their pipe close and exit; stragglers are killed."""
        workers, self._workers = self._workers, []
        self._idle = asyncio.Queue()
        for worker in workers:
            worker.conn.close()
        for worker in workers:
            worker.process.join(_STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(_STOP_GRACE_S)

    def worker_pids(self) -> list[int]:
        """The live workers' process ids."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def durations_to(
        self, sources: Sequence[LatLng], destination: LatLng
    ) -> list[float | None]:
        """:func:`durations_to`, the sources split evenly over the workers. Sources at the same
        position (drivers waiting at one depot or restaurant, parked on one snapped road point)
        are routed once: OSRM's cost is per coordinate, mostly snapping it."""
        distinct = list(dict.fromkeys(sources))
        if not self._workers or len(distinct) < 2:
            times = durations_to(self._roads, distinct, destination)
        else:
            destination_pair = (destination.lat, destination.lng)
            times = await self._split("durations_to", distinct, destination_pair)
        if len(distinct) == len(sources):
            return times
        by_source = dict(zip(distinct, times, strict=True))
        return [by_source[source] for source in sources]

    async def snap_each(
        self, points: Sequence[LatLng], max_distance_m: float
    ) -> list[LatLng | None]:
        """:func:`snap_each`, the points split evenly over the workers, a block at a time: a
        search arriving during a long path's snapping waits for one block, not the path."""
        snapped: list[LatLng | None] = []
        block = _SNAP_BLOCK * max(1, len(self._workers))
        for start in range(0, len(points), block):
            part = points[start : start + block]
            if not self._workers or len(part) < 2:
                snapped += snap_each(self._roads, part, max_distance_m)
                await asyncio.sleep(0)  # inline: let the loop serve others between blocks
                continue
            pairs = await self._split("snap_each", part, max_distance_m)
            snapped += [None if pair is None else LatLng(*pair) for pair in pairs]
        return snapped

    async def _split(self, name: str, points: Sequence[LatLng], argument: Any) -> list[Any]:
        """One operation over ``points``, a part per worker, answers joined in order."""
        size = -(-len(points) // len(self._workers))
        parts = [points[start : start + size] for start in range(0, len(points), size)]
        # Shielded: a cancelled caller must still read its workers' answers before they take
        # the next request.
        answers = await asyncio.gather(
            *(asyncio.shield(self._part(name, part, argument)) for part in parts)
        )
        return [value for answer in answers for value in answer]

    async def _part(self, name: str, points: Sequence[LatLng], argument: Any) -> list[Any]:
        worker = await self._idle.get()
        try:
            worker.conn.send((name, [(p.lat, p.lng) for p in points], argument))
            answer: list[Any] = await self._answer(worker)
        except (EOFError, OSError):
            # The worker died (killed, out of memory): a fresh one takes its place.
            log.warning("road worker died; starting another", extra={"pid": worker.process.pid})
            await self._replace(worker)
            inline: list[Any] = _OPERATIONS[name](self._roads, list(points), argument)
            return inline
        self._idle.put_nowait(worker)
        return answer

    async def _replace(self, dead: _Worker) -> None:
        dead.conn.close()
        dead.process.join(0)
        if dead not in self._workers:  # stopped meanwhile
            return
        fresh = self._spawn(self._workers.index(dead))
        try:
            await self._answer(fresh)
        except (EOFError, OSError):
            log.exception("road worker failed to start; running with one less")
            self._workers.remove(dead)
            return
        self._workers[self._workers.index(dead)] = fresh
        self._idle.put_nowait(fresh)

    def _spawn(self, index: int) -> _Worker:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(
                theirs,
                str(self._roads.path),
                self._roads.max_snap_m,
                os.getpid(),
                self._cpu_for(index),
            ),
            name="road-worker",
            daemon=True,
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def _cpu_for(self, index: int) -> int | None:
        """The CPU worker ``index`` keeps to when the process may use no more CPUs than there
        are workers (a dedicated box or a cpuset container); None (the scheduler's choice) on
        a larger shared machine, where pinning every pod's workers to the same CPUs would
        pile them up."""
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None
        return cpus[index % len(cpus)] if len(cpus) <= self._size else None

    async def _answer(self, worker: _Worker) -> Any:
        """The worker's next message, read when its pipe is readable."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = worker.conn.fileno()
        loop.add_reader(fd, _settle, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        return worker.conn.recv()
