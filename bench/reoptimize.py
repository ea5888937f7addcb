"""Re-optimization benchmark: add an order to a route under way on the real Malta road graph.

For routes of 10, 20 and 40 stops (half pickup/drop-off pairs, half drop-offs of goods on
board) at random snapped addresses around the Valletta harbour area, with windows around
the planned arrival times, one new pickup + drop-off order is inserted with
:func:`dispatch.solver.reoptimize.reoptimize`. The OSRM duration table (stops + driver +
new stops) is fetched through core.roads and timed separately. Builds the graph on first use
(``.lastmile/test-cache/graph``). Writes bench/results/reoptimize.json. Usage::

    .venv/bin/python -m bench.reoptimize --trials 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.geo import LatLng
from core.roads import NoRoute, RoadNetwork
from dispatch.solver.reoptimize import NewOrder, RouteUnderWay, Stop, StopKind, reoptimize
from ops.graph import build_graph

REPO = Path(__file__).resolve().parent.parent
GRAPH_DIR = REPO / ".lastmile" / "test-cache" / "graph"
RESULTS = REPO / "bench" / "results" / "reoptimize.json"
# Sliema / Valletta / Birkirkara / Paola: dense streets, few points in the sea.
BOX = (35.865, 35.915, 14.46, 14.52)


def _points(roads: RoadNetwork, count: int, rng: random.Random) -> list[LatLng]:
    points: list[LatLng] = []
    while len(points) < count:
        guess = LatLng(rng.uniform(BOX[0], BOX[1]), rng.uniform(BOX[2], BOX[3]))
        try:
            points.append(roads.nearest(guess).location)
        except NoRoute:
            continue
    return points


def _scenario(
    roads: RoadNetwork, size: int, rng: random.Random
) -> tuple[RouteUnderWay, NewOrder, np.ndarray, float]:
    """A route of ``size`` stops in a driving order, plus one new order and the matrix."""
    points = _points(roads, size + 3, rng)  # driver, stops, new pickup, new drop-off
    started = time.perf_counter()
    table = roads.table(points)
    table_s = time.perf_counter() - started
    matrix = np.array([[v if v is not None else 1e6 for v in row] for row in table.durations_s])
    order = list(range(1, size + 1))
    stops: list[Stop] = []
    clock, place, on_board = 0.0, 0, 0
    pairs = size // 4  # 2 * pairs stops are pickups/drop-offs of new pairs
    for k, node in enumerate(order):
        clock += float(matrix[place, node])
        if k < 2 * pairs:
            pair, is_pickup = divmod(k, 2)[0], k % 2 == 0
            kind, load, order_id = (
                (StopKind.PICKUP, 1, f"p{pair}")
                if is_pickup
                else (StopKind.DROPOFF, -1, f"p{pair}")
            )
        else:
            kind, load, order_id = StopKind.DROPOFF, -1, f"d{k}"
            on_board += 1
        window = rng.choice([1800.0, 3600.0])
        stops.append(
            Stop(f"s{k}", order_id, kind, node, max(0.0, clock - 600), clock + window, 120.0, load)
        )
        clock += 120.0
        place = node
    route = RouteUnderWay(0.0, 0, stops, capacity=size, load=on_board, end=0)
    new = NewOrder(
        "new",
        (
            Stop("n-p", "new", StopKind.PICKUP, size + 1, 0.0, clock, 120.0, 1),
            Stop("n-d", "new", StopKind.DROPOFF, size + 2, 0.0, clock + 3600.0, 120.0, -1),
        ),
    )
    return route, new, matrix, table_s


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * p95, 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/reoptimize.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sizes", default="10,20,40")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    base = build_graph(REPO / "maps" / "malta.osm.pbf", GRAPH_DIR)
    roads = RoadNetwork(base)
    rng = random.Random(args.seed)
    results: dict[str, Any] = {
        "trials": args.trials,
        "machine": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()},
    }
    for size in (int(s) for s in args.sizes.split(",")):
        solve_times, table_times, rejected = [], [], 0
        for _ in range(args.trials):
            route, new, matrix, table_s = _scenario(roads, size, rng)
            started = time.perf_counter()
            result = reoptimize(route, [new], matrix)
            solve_times.append(time.perf_counter() - started)
            table_times.append(table_s)
            rejected += len(result.rejected)
            assert result.stops[0] == route.stops[0], "the first stop moved"
        results[f"{size}_stops"] = {
            "reoptimize": _percentiles(solve_times),
            "osrm_table": _percentiles(table_times),
            "rejected_orders": rejected,
        }
        print(size, results[f"{size}_stops"], flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["target"] = "p95 < 500 ms at 40 stops (requirement 3 s)"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
