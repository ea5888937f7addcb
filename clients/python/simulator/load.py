"""Load mode: thousands of driver streams sending GPS along real roads and customer Track
streams watching real orders, from several processes, bounded in count and in time.

Each process opens its share of driver streams (spread over a few HTTP/2 connections), sends
a one-second batch of fixes per driver per upload interval, creates a handful of orders and
opens its share of Track streams on them; it reports what it sent and what was acked. The
parent sums the processes' figures and prints them as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import random
import time
from typing import Any

from lastmile_client.lastmile.driver.v1 import TrackingMode
from lastmile_client.lastmile.tracking.v1 import TrackRequest

from core.geo import LatLng
from core.settings import Settings
from simulator.city import City, open_roads
from simulator.clock import SimClock
from simulator.connection import Connection, addresses_of
from simulator.customer import Customer
from simulator.driver_link import DriverLink, default_config, fix_message
from simulator.gps import GpsNoise, RoutePath
from simulator.metrics import Recorder
from simulator.scenario import Customers

CENTER = LatLng(35.8989, 14.5146)
RADIUS_M = 4000.0
STREAMS_PER_CONNECTION = 200
PATHS_PER_PROCESS = 16
ORDERS_PER_PROCESS = 8
DRIVE_SPEED_MPS = 10.0
UPLOAD_EVERY_S = 5.0


async def _driver(link: DriverLink, path: RoutePath, noise: GpsNoise, stop_at: float) -> None:
    runner = asyncio.create_task(link.run())
    await link.connected.wait()
    distance = random.uniform(0.0, path.length_m)
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < stop_at:
            fixes = []
            for _ in range(int(UPLOAD_EVERY_S)):
                distance = (distance + DRIVE_SPEED_MPS) % max(1.0, path.length_m)
                where, heading = path.position_at(distance)
                fixes.append(
                    fix_message(noise.observe(where, DRIVE_SPEED_MPS, heading), SimClock.wall_now())
                )
            link.send_fixes(fixes)
            await asyncio.sleep(UPLOAD_EVERY_S)
    finally:
        await link.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner


async def _watcher(connection: Connection, token: str, recorder: Recorder, stop_at: float) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError, Exception):
        async with asyncio.timeout(max(0.1, stop_at - loop.time())):
            recorder.counts["track_opens"] += 1
            async for _ in connection.tracking().track(TrackRequest(tracking_token=token)):
                recorder.counts["track_messages"] += 1


async def _process(
    settings: Settings, target: str | None, index: int, drivers: int, customers: int, seconds: float
) -> dict[str, Any]:
    rng = random.Random(index)
    city = City(open_roads(settings, None), CENTER, RADIUS_M)
    paths = [
        city.path(city.random_place(rng), city.random_place(rng)) for _ in range(PATHS_PER_PROCESS)
    ]
    addresses = addresses_of(settings, target)
    pool = [
        Connection(settings, addresses, "load")
        for _ in range(max(1, (drivers + customers) // STREAMS_PER_CONNECTION + 1))
    ]
    recorder = Recorder()
    stop_at = asyncio.get_running_loop().time() + seconds
    tasks = []

    async def ignore(kind: str, value: object) -> None:
        return None

    for i in range(drivers):
        connection = pool[i % len(pool)]
        driver_id = f"load-{index}-{i}"
        link = DriverLink(
            connection.gateway(driver_id),
            driver_id,
            recorder,
            ignore,
            default_config(TrackingMode.ACTIVE, 1.0, UPLOAD_EVERY_S),
        )
        noise = GpsNoise(5.0, 0.0, random.Random(f"{index}:{i}"))
        tasks.append(asyncio.create_task(_driver(link, paths[i % len(paths)], noise, stop_at)))
    tokens = []
    if customers:
        clock = SimClock(1.0)
        for k in range(ORDERS_PER_PROCESS):
            customer = Customer(
                city.random_place(rng),
                Customers(),
                pool[0],
                clock,
                recorder,
                random.Random(f"{index}:order:{k}"),
                f"load{index}",
            )
            tokens.append(
                (
                    await customer.place("", 3600.0, pickup=paths[k % len(paths)].points[0])
                ).tracking_token
            )
    for i in range(customers):
        connection = pool[(drivers + i) % len(pool)]
        tasks.append(
            asyncio.create_task(_watcher(connection, tokens[i % len(tokens)], recorder, stop_at))
        )
    started = time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in pool:
        connection.close()
    return {"process": index, "wall_s": time.monotonic() - started, **dict(recorder.counts)}


def _child(
    settings: Settings,
    target: str | None,
    index: int,
    drivers: int,
    customers: int,
    seconds: float,
    results: Any,
) -> None:
    results.put(asyncio.run(_process(settings, target, index, drivers, customers, seconds)))


def run_load(
    settings: Settings,
    target: str | None,
    drivers: int,
    customers: int,
    seconds: float,
    processes: int,
) -> int:
    """Run the load from ``processes`` processes; print the summed figures as JSON."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    count = max(1, processes)
    children = [
        context.Process(
            target=_child,
            args=(
                settings,
                target,
                i,
                drivers // count + (i < drivers % count),
                customers // count + (i < customers % count),
                seconds,
                results,
            ),
        )
        for i in range(count)
    ]
    for child in children:
        child.start()
    figures = [results.get(timeout=seconds + 120.0) for _ in children]
    for child in children:
        child.join(timeout=10.0)
    total: dict[str, float] = {}
    for one in figures:
        for key, value in one.items():
            if key not in ("process", "wall_s") and isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    total["fixes_acked_per_s"] = total.get("fixes_acked", 0) / max(1.0, seconds)
    print(json.dumps({"processes": figures, "total": total}, indent=2))
    return 0
