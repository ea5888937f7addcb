"""Load mode: thousands of driver streams sending GPS along real roads and customer ``Track``
streams watching real orders, from several processes, bounded in count and in time. It is the
one load generator of the project: ``lastmile simulate --load`` and the tracking benchmark
(``bench/tracking.py``, whose phases are :class:`Phase` values) both run :func:`run_plan`.

A :class:`LoadPlan` is one process's share: its drivers (each on its own ``Connect`` stream,
a few hundred streams per HTTP/2 connection, moving back and forth along a road of the city
with GPS noise, see :mod:`simulator.load_actors`), the tracking tokens its customers watch, and
how many orders it first creates on its own drivers (:mod:`simulator.load_orders`; the
benchmark puts its orders straight into the database instead). :func:`run_worker` runs a plan
in a process and returns its figures as a plain dict; :func:`merge` sums the figures of many.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import random
import resource
import time
import uuid
from dataclasses import dataclass
from typing import Any

from grpc import aio

from core import gc_tuning
from core.auth import Role
from core.geo import LatLng
from core.settings import Settings
from simulator.city import City, open_roads, road_graph
from simulator.connection import Connection, addresses_of
from simulator.gps import GpsNoise, RoutePath
from simulator.load_actors import (
    MODES,
    LoadDriver,
    Phase,
    Tally,
    Walker,
    drive,
    probe_loop,
    road_seconds,
    watch,
)
from simulator.load_orders import place_orders
from simulator.report import percentile

__all__ = [
    "LoadPlan",
    "Phase",
    "merge",
    "raise_fd_limit",
    "run_load",
    "run_plan",
    "run_plans",
    "run_worker",
    "standalone_plans",
]

# Where `lastmile simulate --load` drives when not told: central Malta.
CENTER = (35.8989, 14.5146)
RADIUS_M = 4000.0
STREAMS_PER_CONNECTION = 200
PATHS_PER_PROCESS = 16
# Streams opened together during a ramp.
RAMP_GROUP = 200
# Figures that are not summed by :func:`merge`.
_NOT_SUMMED = frozenset(
    {
        "latencies",
        "latency_at",
        "snapshot_waits",
        "loop_lags",
        "loop_lag_at",
        "first_error",
        "peak_rss_kb",
        "wall_s",
        "process",
        "acked_by_second",
    }
)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """One load process's share of a run (picklable: it crosses process boundaries)."""

    settings: Settings
    # Service name -> host:port (gateway, dispatch; tracking unless ``trackers`` is given).
    addresses: dict[str, str]
    tenant: str
    phase: Phase
    drivers: tuple[str, ...] = ()
    # Tracking tokens watched by one customer each (orders made elsewhere).
    tokens: tuple[str, ...] = ()
    # Orders created first on this plan's first drivers, and the customers watching them
    # (spread evenly over them).
    orders: int = 0
    customers: int = 0
    # Tracking processes the customers spread over (default: addresses["tracking"]).
    trackers: tuple[str, ...] = ()
    center: tuple[float, float] = CENTER
    radius_m: float = RADIUS_M
    gps_noise_m: float = 5.0
    gps_outlier_rate: float = 0.01
    seed: int = 0
    index: int = 0


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (thousands of sockets); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_worker(plan: LoadPlan) -> dict[str, Any]:
    """Run ``plan`` in this process (a pool worker or a child) and return its figures."""
    raise_fd_limit()
    return asyncio.run(run_plan(plan))


@dataclass
class _Channels:
    """The streams' channels: gateway and tracking processes, a few hundred streams each."""

    gateway: list[aio.Channel]
    tracking: list[aio.Channel]

    @classmethod
    def open(cls, plan: LoadPlan, drivers: int, customers: int) -> _Channels:
        trackers = plan.trackers or (plan.addresses["tracking"],)
        per_tracker = math.ceil(customers / len(trackers) / STREAMS_PER_CONNECTION)
        return cls(
            [_channel(plan.addresses["gateway"]) for _ in range(_needed(drivers))],
            [_channel(t) for t in trackers for _ in range(max(1, per_tracker))],
        )

    async def close(self) -> None:
        """Close every channel."""
        for channel in self.gateway + self.tracking:
            await channel.close(None)


def _needed(streams: int) -> int:
    return max(1, math.ceil(streams / STREAMS_PER_CONNECTION))


def _channel(address: str) -> aio.Channel:
    # Each channel its own connection (grpc shares them by default), so that streams spread
    # over connections and over the gateway processes sharing a port.
    return aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _paths(plan: LoadPlan) -> tuple[City, list[RoutePath]]:
    city = City(open_roads(plan.settings, None), LatLng(*plan.center), plan.radius_m)
    rng = random.Random(f"{plan.seed}:paths:{plan.index}")
    paths = [
        city.path(city.random_place(rng), city.random_place(rng)) for _ in range(PATHS_PER_PROCESS)
    ]
    return city, paths


async def run_plan(plan: LoadPlan) -> dict[str, Any]:
    """Set up (roads, the plan's orders), then run every stream until the phase ends."""
    if plan.phase.mode not in MODES:
        raise ValueError(f"phase mode must be one of {', '.join(MODES)}, got {plan.phase.mode!r}")
    tally = Tally()
    connection = Connection(plan.settings, plan.addresses, plan.tenant)
    customers = len(plan.tokens) + (plan.customers if plan.orders else 0)
    channels = _Channels.open(plan, len(plan.drivers), customers)
    try:
        drivers, tokens = await _prepare(plan, connection, channels, tally)
        # The load's own collector pauses would be measured as the servers' latency.
        gc_tuning.settle(plan.settings.gc_young_threshold)
        started = time.monotonic()
        await _run_streams(plan, channels, drivers, tokens, tally)
        wall_s = time.monotonic() - started
    finally:
        gc_tuning.release()  # a pool process runs the next plan: this one's objects may go
        connection.close()
        await channels.close()
    return _figures(plan, tally, wall_s)


async def _prepare(
    plan: LoadPlan, connection: Connection, channels: _Channels, tally: Tally
) -> tuple[list[LoadDriver], list[str]]:
    """The plan's driver apps on their roads, and the tokens its customers watch."""
    drivers: list[LoadDriver] = []
    tokens = list(plan.tokens)
    if not plan.drivers:
        return drivers, tokens
    city, paths = _paths(plan)
    roads = [road_seconds(path) for path in paths]
    seeded = [(d, i % len(paths)) for i, d in enumerate(plan.drivers)]
    orders = await place_orders(
        connection,
        [(d, paths[k].points[0]) for d, k in seeded[: plan.orders]],
        city,
        f"load{plan.seed}-{plan.index}-{uuid.uuid4().hex[:6]}",
        tally.recorder,
    )
    stops = {o.driver_id: o.stops for o in orders}
    if orders:
        tokens += [orders[k % len(orders)].tracking_token for k in range(plan.customers)]
    for i, (driver_id, k) in enumerate(seeded):
        rng = random.Random(f"{plan.seed}:{driver_id}")
        noise = GpsNoise(plan.gps_noise_m, plan.gps_outlier_rate, rng)
        drivers.append(
            LoadDriver(
                driver_id,
                channels.gateway[i % len(channels.gateway)],
                tuple(connection.bearer(driver_id, Role.DRIVER).items()),
                Walker(roads[k], noise, rng),
                rng,
                stops.get(driver_id, ()),
            )
        )
    return drivers, tokens


async def _run_streams(
    plan: LoadPlan,
    channels: _Channels,
    drivers: list[LoadDriver],
    tokens: list[str],
    tally: Tally,
) -> None:
    """Open the customers' and drivers' streams (over the ramp) and wait for the deadline."""
    phase = plan.phase
    loop = asyncio.get_running_loop()
    deadline = loop.time() + phase.ramp_s + phase.seconds
    total = len(tokens) + len(drivers)
    tasks: list[asyncio.Task[None]] = []
    if tokens:  # receive times are stamped here: how late this loop runs
        tasks.append(asyncio.create_task(probe_loop(deadline, tally)))
    # Customers first: they see the drivers' first positions.
    for i, token in enumerate(tokens):
        await _ramp(i, total, phase.ramp_s)
        channel = channels.tracking[i % len(channels.tracking)]
        tasks.append(asyncio.create_task(watch(channel, token, deadline, tally)))
    for i, driver in enumerate(drivers):
        await _ramp(len(tokens) + i, total, phase.ramp_s)
        tasks.append(asyncio.create_task(drive(driver, phase, deadline, tally)))
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException):
            tally.error("task_errors", f"a load stream failed: {result!r}")


async def _ramp(index: int, total: int, ramp_s: float) -> None:
    """Pause between groups of streams so that ``total`` open evenly over ``ramp_s``."""
    if ramp_s > 0 and index % RAMP_GROUP == 0 and index:
        await asyncio.sleep(ramp_s * RAMP_GROUP / max(1, total))


def _figures(plan: LoadPlan, tally: Tally, wall_s: float) -> dict[str, Any]:
    counts = tally.recorder.counts
    errors = sum(
        counts[k]
        for k in (
            "stream_errors",
            "events_rejected",
            "track_errors",
            "never_connected",
            "not_admitted",
            "task_errors",
        )
    )
    return {
        "process": plan.index,
        "drivers": len(plan.drivers),
        "customers": counts["track_opens"],
        **dict(counts),
        "errors": errors,
        "first_error": tally.recorder.notes[0] if tally.recorder.notes else None,
        "latencies": tally.latencies,
        "latency_at": tally.latency_at,
        "snapshot_waits": tally.snapshot_waits,
        "loop_lags": tally.loop_lags,
        "loop_lag_at": tally.loop_lag_at,
        "acked_by_second": dict(tally.acked_by_second),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "wall_s": wall_s,
    }


def merge(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several processes as one: counters summed, latencies joined, the first
    error kept, the largest peak RSS and wall time."""
    merged: dict[str, Any] = {
        "latencies": [],
        "latency_at": [],
        "snapshot_waits": [],
        "loop_lags": [],
        "loop_lag_at": [],
        "acked_by_second": {},
        "first_error": None,
        "peak_rss_kb": 0,
        "wall_s": 0,
        "errors": 0,
    }
    for one in figures:
        for samples in ("latencies", "latency_at", "snapshot_waits", "loop_lags", "loop_lag_at"):
            merged[samples] += one.get(samples, [])
        for second, fixes in one.get("acked_by_second", {}).items():
            merged["acked_by_second"][second] = merged["acked_by_second"].get(second, 0) + fixes
        merged["first_error"] = merged["first_error"] or one.get("first_error")
        merged["peak_rss_kb"] = max(merged["peak_rss_kb"], one.get("peak_rss_kb", 0))
        merged["wall_s"] = max(merged["wall_s"], one.get("wall_s", 0))
        for key, value in one.items():
            if key not in _NOT_SUMMED and isinstance(value, int | float):
                merged[key] = merged.get(key, 0) + value
    return merged


def steady_rate(acked_by_second: dict[int, int], skip_head_s: int, skip_tail_s: int) -> float:
    """Fixes acked per second while the load was steady: the mean over the seconds of sending
    (``acked_by_second``, merged :func:`merge` figures) without the first ``skip_head_s`` (the
    ramp, the first upload interval) and the last ``skip_tail_s`` (the last partial second and
    interval). 0.0 when nothing is left."""
    if not acked_by_second:
        return 0.0
    first = min(acked_by_second) + skip_head_s
    last = max(acked_by_second) - skip_tail_s
    if last < first:
        return 0.0
    return sum(acked_by_second.get(s, 0) for s in range(first, last + 1)) / (last - first + 1)


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def standalone_plans(
    settings: Settings,
    target: str | None,
    drivers: int,
    customers: int,
    seconds: float,
    processes: int,
) -> list[LoadPlan]:
    """``lastmile simulate --load``: drivers sending 5-fix batches every 5 s (the default
    upload); one order per driver until there is one per customer, the customers spread over
    them. Refuses customers without drivers (their orders need one)."""
    if customers > 0 and drivers < 1:
        raise ValueError("customers watch the drivers' orders: give at least one driver")
    count = max(1, processes)
    mine = [_share(drivers, count, i) for i in range(count)]
    orders = [min(m, _share(min(drivers, customers), count, i)) for i, m in enumerate(mine)]
    # Customers go to the processes that have orders to watch.
    watching = [i for i in range(count) if orders[i]]
    watchers = {i: _share(customers, len(watching), j) for j, i in enumerate(watching)}
    run = uuid.uuid4().hex[:6]
    return [
        LoadPlan(
            settings=settings,
            addresses=addresses_of(settings, target),
            tenant="load",
            phase=Phase(mode="rate", fixes_per_message=5, interval_s=5.0, seconds=seconds),
            drivers=tuple(f"load-{run}-{i}-{k}" for k in range(mine[i])),
            orders=orders[i],
            customers=watchers.get(i, 0),
            seed=i,
            index=i,
        )
        for i in range(count)
    ]


def run_plans(plans: list[LoadPlan], timeout_s: float) -> list[dict[str, Any]]:
    """Each plan in its own process (spawned); their figures in plan order."""
    road_graph(plans[0].settings, None)  # built once here, opened by every process
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(plans)) as pool:
        pending = [pool.apply_async(run_worker, (plan,)) for plan in plans]
        return [p.get(timeout=timeout_s) for p in pending]


def run_load(
    settings: Settings,
    target: str | None,
    drivers: int,
    customers: int,
    seconds: float,
    processes: int,
) -> int:
    """``lastmile simulate --load``: run the load and print the figures as JSON (per process
    and summed, with the customers' position latency percentiles)."""
    plans = standalone_plans(settings, target, drivers, customers, seconds, processes)
    figures = run_plans(plans, seconds + 300.0)
    total = merge(figures)
    latencies = total.pop("latencies")
    total.pop("latency_at")
    total["loop_lag_ms"] = _percentiles_ms(total.pop("loop_lags"))
    total.pop("loop_lag_at")
    total["fixes_acked_per_s"] = round(total.get("fixes_acked", 0) / max(1.0, seconds), 1)
    total["position_latency_ms"] = _percentiles_ms(latencies)
    total["snapshot_wait_ms"] = _percentiles_ms(total.pop("snapshot_waits"))
    total.pop("acked_by_second")
    for one in figures:
        one["positions"] = len(one.pop("latencies"))
        for key in ("latency_at", "snapshot_waits", "loop_lags", "loop_lag_at", "acked_by_second"):
            one.pop(key)
    print(json.dumps({"processes": figures, "total": total}, indent=2))
    return 0


def _percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    return {f"p{round(q * 100)}": _ms(percentile(seconds, q)) for q in (0.5, 0.95, 0.99)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
