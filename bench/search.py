"""SearchDrivers benchmark: 50,000 live drivers in a real Redis, every search shape through the
real FleetService over gRPC (served in this process, on loopback).

Drivers are spread at random over the default city's (Malta's) land: each random point is
snapped to its nearest road with OSRM (points with no road within 1 km, the sea, are drawn
again); ``--raw-share`` of them keep a raw position up to ~30 m off the road, as GPS gives.
Statuses: 10% offline, the rest idle / to pickup / delivering. Queries are centred on random
drivers (where the fleet is), one at a time, default statuses and limit:

* circle: radius ``--radius`` m; rectangle: a square of side 2 x radius; polygon: an
  irregular hexagon of about that radius; isochrone: ``--drive`` seconds.

Bounded: at most ``--queries`` per shape and ``--seconds`` per shape. Starts its own Redis
(temporary dir, free port) and stops it by PID. Prints a table, writes bench/results/search.json.

    .venv/bin/python -m bench.search --drivers 50000 --queries 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc, tracking_pb2

from core import gc_tuning
from core import live_state_keys as keys
from core.auth import Role, issue_token
from core.bus import Bus
from core.db import Database
from core.geo import LatLng
from core.roads import NoRoute, RoadNetwork
from core.runtime import ServiceHost
from core.settings import PROJECT_ROOT, Settings
from ops.graph import build_graph
from ops.servers import RedisServer
from ops.servers.process import free_port
from tracking.fleet_api import FleetHandlers
from tracking.service import components

RESULTS = PROJECT_ROOT / "bench" / "results" / "search.json"
GRAPH_CACHE = PROJECT_ROOT / ".lastmile" / "test-cache" / "graph"
PBF = PROJECT_ROOT / "maps" / "malta.osm.pbf"
# Malta and Gozo.
SOUTH, WEST, NORTH, EAST = 35.80, 14.18, 36.08, 14.58
M_PER_DEG = 111_195.0
STATUSES = (
    [common_pb2.DRIVER_STATUS_OFFLINE] * 10
    + [common_pb2.DRIVER_STATUS_IDLE] * 40
    + [common_pb2.DRIVER_STATUS_TO_PICKUP] * 20
    + [common_pb2.DRIVER_STATUS_DELIVERING] * 30
)


def machine() -> dict[str, Any]:
    """nproc and CPU model."""
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def place_drivers(
    roads: RoadNetwork, count: int, raw_share: float, rng: random.Random
) -> list[LatLng]:
    """``count`` positions on (or, for ``raw_share`` of them, next to) Malta's roads."""
    found: list[LatLng] = []
    while len(found) < count:
        point = LatLng(rng.uniform(SOUTH, NORTH), rng.uniform(WEST, EAST))
        try:
            road = roads.nearest(point).location
        except NoRoute:
            continue
        if rng.random() < raw_share:
            off = rng.uniform(0, 30) / M_PER_DEG
            road = LatLng(road.lat + off * rng.uniform(-1, 1), road.lng + off * rng.uniform(-1, 1))
        found.append(road)
    return found


async def load(client: Any, positions: list[LatLng], rng: random.Random) -> None:
    """Write the live state of every driver (the processor's shape), 2,000 per round trip."""
    now_ms = int(time.time() * 1000)
    for start in range(0, len(positions), 2000):
        pipe = client.pipeline(transaction=False)
        for i, p in enumerate(positions[start : start + 2000], start):
            driver = f"bench-{i:05d}"
            pipe.geoadd(keys.DRIVERS_GEO, (p.lng, p.lat, driver))
            pipe.hset(
                keys.driver_key(driver),
                mapping={
                    keys.FIELD_LAT: repr(p.lat),
                    keys.FIELD_LNG: repr(p.lng),
                    keys.FIELD_HEADING: "0",
                    keys.FIELD_SPEED: "8.5",
                    keys.FIELD_POSITION_AT: str(now_ms),
                    keys.FIELD_STATUS: str(rng.choice(STATUSES)),
                    keys.FIELD_CURRENT_ORDER_ID: "",
                    keys.FIELD_CURRENT_STOP_ID: "",
                    keys.FIELD_SNAPPED_LAT: "",
                    keys.FIELD_SNAPPED_LNG: "",
                    keys.FIELD_NAME: f"Driver {i}",
                    keys.FIELD_TENANT: "bench",
                },
            )
        await pipe.execute()


def _ll(p: LatLng) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=p.lat, lng=p.lng)


def _offset(c: LatLng, east_m: float, north_m: float) -> LatLng:
    return LatLng(
        c.lat + north_m / M_PER_DEG,
        c.lng + east_m / (M_PER_DEG * math.cos(math.radians(c.lat))),
    )


def request_for(
    shape: str, c: LatLng, radius: float, drive_s: int, rng: random.Random
) -> fleet_service_pb2.SearchDriversRequest:
    """One query of ``shape`` centred on ``c``."""
    if shape == "circle":
        return fleet_service_pb2.SearchDriversRequest(
            circle=common_pb2.Circle(center=_ll(c), radius_m=radius)
        )
    if shape == "rectangle":
        sw, ne = _offset(c, -radius, -radius), _offset(c, radius, radius)
        return fleet_service_pb2.SearchDriversRequest(
            rectangle=common_pb2.BoundingBox(south_west=_ll(sw), north_east=_ll(ne))
        )
    if shape == "polygon":
        vertices = [
            _offset(
                c,
                radius * rng.uniform(0.7, 1.2) * math.cos(a),
                radius * rng.uniform(0.7, 1.2) * math.sin(a),
            )
            for a in (k * math.pi / 3 for k in range(6))
        ]
        return fleet_service_pb2.SearchDriversRequest(
            polygon=common_pb2.Polygon(vertices=[_ll(v) for v in vertices])
        )
    return fleet_service_pb2.SearchDriversRequest(
        isochrone=tracking_pb2.Isochrone(center=_ll(c), max_drive=Duration(seconds=drive_s))
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_shape(
    client: Any, auth: Any, shape: str, centres: list[LatLng], args: argparse.Namespace
) -> dict[str, Any]:
    """Queries of one shape, one at a time, until the count or time bound."""
    rng = random.Random(shape)
    latencies: list[float] = []
    results: list[int] = []
    until = time.monotonic() + args.seconds
    for i in range(args.queries):
        if time.monotonic() > until:
            break
        request = request_for(shape, centres[i % len(centres)], args.radius, args.drive, rng)
        started = time.perf_counter()
        response = await client.SearchDrivers(request, metadata=auth, timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
        results.append(len(response.drivers))
    return {
        "shape": shape,
        "queries": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "mean_results": round(statistics.mean(results), 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Set up Redis and the service, load drivers, query every shape."""
    graph = build_graph(PBF, GRAPH_CACHE)
    roads = RoadNetwork(graph)
    rng = random.Random(42)
    started = time.perf_counter()
    positions = place_drivers(roads, args.drivers, args.raw_share, rng)
    placed_s = time.perf_counter() - started
    base = Path(tempfile.mkdtemp(prefix="lastmile-bench-search-"))
    redis = RedisServer(base / "redis", free_port())
    redis.start()
    try:
        settings = Settings.from_env({}).replace(
            redis_url=redis.url, metrics_port=0, road_workers=args.road_workers
        )
        bus = Bus(settings)
        # The database is never touched by search; the handlers reach it lazily.
        fleet = FleetHandlers(settings, bus, Database(settings), roads)
        port = free_port()
        host = ServiceHost("tracking", settings, port, [bus, fleet, *components(None, fleet)])
        await host.start()
        try:
            await load(bus.redis, positions, rng)
            gc_tuning.settle(settings.gc_young_threshold)  # as a serving process does
            token = issue_token(settings, "bench", Role.DISPATCHER, "bench")
            auth = (("authorization", f"Bearer {token}"),)
            centres = [positions[rng.randrange(len(positions))] for _ in range(args.queries)]
            async with grpc.aio.insecure_channel(f"{settings.host}:{port}") as channel:
                client = fleet_service_pb2_grpc.FleetServiceStub(channel)
                for shape in ("circle", "rectangle"):  # warm-up: connection, code paths
                    await run_shape(client, auth, shape, centres[:20], _few(args))
                shapes = [
                    await run_shape(client, auth, shape, centres, args)
                    for shape in ("circle", "rectangle", "polygon", "isochrone")
                ]
        finally:
            await host.stop()
            gc_tuning.release()
    finally:
        redis.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "benchmark": "search",
        "machine": machine(),
        "setup": (
            "1 Redis + FleetService (grpc.aio, in-process with the client, loopback); queries"
            " sequential; default statuses (all but offline) and limit (50)"
        ),
        "drivers": args.drivers,
        "driver_placement_s": round(placed_s, 1),
        "radius_m": args.radius,
        "isochrone_drive_s": args.drive,
        "road_workers": args.road_workers,
        "target_p99_ms": 20,
        "shapes": shapes,
    }


def _few(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "queries": 20})


def table(result: dict[str, Any]) -> str:
    """A short text table of the figures."""
    m = result["machine"]
    lines = [
        f"SearchDrivers over {result['drivers']} drivers; {m['nproc']} cores {m['cpu']};"
        f" Python {m['python']}",
        f"{'shape':<10} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'hits':>6}",
    ]
    for s in result["shapes"]:
        lines.append(
            f"{s['shape']:<10} {s['queries']:>5} {s['p50_ms']:>8} {s['p95_ms']:>8}"
            f" {s['p99_ms']:>8} {s['max_ms']:>8} {s['mean_results']:>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--radius", type=float, default=1000.0)
    parser.add_argument("--drive", type=int, default=300)
    parser.add_argument("--raw-share", type=float, default=0.2)
    parser.add_argument(
        "--road-workers",
        type=int,
        default=Settings.from_env({}).road_workers,
        help="isochrone road worker processes (0: inline)",
    )
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(table(outcome))
