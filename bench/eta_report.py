"""ETA accuracy report benchmark: FleetService.GetEtaAccuracy's query over a busy tenant's history.

Seeds a fresh PostgreSQL (the project's migrations) with ``--days`` of deliveries,
``--per-day`` a day for the tenant asked about and a tenth of that for another tenant, each with
``--predictions`` ETAs shown before it (one every 45 s, errors spread over +-10 minutes), then
times the report (:class:`tracking.eta_accuracy.EtaAccuracyReport`, in process) for the last
day, week and month, whole tenant and one driver, ``--repeat`` times each. The timeout of the
report (``eta_accuracy_timeout_s``) is lifted so that every range is measured. Writes
bench/results/eta_report.json. Usage::

    .venv/bin/python -m bench.eta_report --days 30 --per-day 5000 --predictions 40
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.tracking.v1 import fleet_service_pb2

from core.auth import Principal, Role, set_current_principal
from core.db import Database
from core.settings import Settings
from ops.servers import PostgresServer
from ops.servers.process import free_port
from tracking.eta_accuracy import EtaAccuracyReport

RESULTS = Path(__file__).resolve().parent / "results" / "eta_report.json"
TENANT = "bench"
DRIVERS = 500
SEED_TIMEOUT_S = 1800.0

# Orders of both tenants (one in eleven is the other tenant's), delivered evenly over the days.
_ORDERS = """
INSERT INTO orders (order_id, tenant_id, idempotency_key, request_digest, kind, status,
                    pickup_address, pickup_lat, pickup_lng, drop_off_address, drop_off_lat,
                    drop_off_lng, tracking_token_digest, driver_id)
SELECT 'o' || g, CASE WHEN g % 11 = 0 THEN 'other' ELSE $2 END, 'k' || g, 'd', 1, 8,
       '{}', 35.9, 14.5, '{}', 35.91, 14.51, 't' || g, NULL
FROM generate_series(1, $1::int) g
"""
# Nine deliveries in ten have an arrival from the driver's positions, two minutes before.
_ARRIVALS = """
INSERT INTO eta_arrivals (order_id, status, arrived_at, reached_at)
SELECT 'o' || g, 8, at, CASE WHEN g % 10 = 0 THEN NULL ELSE at - interval '120 s' END
FROM (SELECT g, $2::timestamptz - (g * $3::float8) * interval '1 second' AS at
      FROM generate_series(1, $1::int) g) d
"""
_PREDICTIONS = """
INSERT INTO eta_predictions (order_id, driver_id, predicted_at, predicted_arrival, remaining_s,
                             remaining_m)
SELECT a.order_id, 'drv-' || (hashtext(a.order_id) & 1023) % $2, a.arrived_at - k * interval '45 s',
       a.arrived_at + (random() * 1200 - 600) * interval '1 second', k * 45, k * 400
FROM eta_arrivals a, generate_series(1, $1::int) k
"""


def _stamp(at: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


async def _seed(database: Database, args: argparse.Namespace, now: dt.datetime) -> dict[str, Any]:
    total = int(args.days * args.per_day * 1.1)
    spacing_s = args.days * 86400 / total
    started = time.perf_counter()
    async with database.pool.acquire() as conn:
        # Millions of rows: longer than the pool's command timeout.
        await conn.execute(_ORDERS, total, TENANT, timeout=SEED_TIMEOUT_S)
        await conn.execute(_ARRIVALS, total, now, spacing_s, timeout=SEED_TIMEOUT_S)
        await conn.execute(_PREDICTIONS, args.predictions, DRIVERS, timeout=SEED_TIMEOUT_S)
        await conn.execute("ANALYZE", timeout=SEED_TIMEOUT_S)
        predictions = await conn.fetchval("SELECT count(*) FROM eta_predictions")
    return {
        "deliveries": total,
        "predictions": int(predictions),
        "seed_s": round(time.perf_counter() - started, 1),
    }


async def _time(
    report: EtaAccuracyReport, request: fleet_service_pb2.GetEtaAccuracyRequest, repeat: int
) -> dict[str, Any]:
    times: list[float] = []
    answer = fleet_service_pb2.GetEtaAccuracyResponse()
    for _ in range(repeat):
        started = time.perf_counter()
        answer = await report.get(request)
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "predictions_counted": answer.overall.predictions,
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(times[-1] * 1000, 1),
    }


async def bench(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Seed, then time each range."""
    database = Database(settings)
    await database.start()
    try:
        now = dt.datetime.now(dt.UTC)
        seeded = await _seed(database, args, now)
        report = EtaAccuracyReport(settings, database)
        set_current_principal(Principal("bench", Role.DISPATCHER, TENANT))
        ranges: dict[str, Any] = {}
        for name, days in (("day", 1), ("week", 7), ("month", 30)):
            if days > args.days:
                continue
            for who, driver in (("tenant", ""), ("one_driver", "drv-7")):
                request = fleet_service_pb2.GetEtaAccuracyRequest(
                    start=_stamp(now - dt.timedelta(days=days)), end=_stamp(now), driver_id=driver
                )
                ranges[f"{name}_{who}"] = await _time(report, request, args.repeat)
                print(name, who, ranges[f"{name}_{who}"], flush=True)
        return {"seeded": seeded, "ranges": ranges}
    finally:
        await database.stop()


def main() -> None:
    """Start PostgreSQL, seed, time, record."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=5000, help="deliveries a day")
    parser.add_argument("--predictions", type=int, default=40, help="ETAs shown per delivery")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lastmile-bench-eta-report-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user
    postgres = PostgresServer(base / "pg" / "data", free_port())
    try:
        postgres.start()
        settings = Settings.from_env({}).replace(
            database_url=postgres.dsn, data_dir=base, eta_accuracy_timeout_s=3600.0
        )
        result = asyncio.run(bench(settings, args))
    finally:
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "benchmark": "eta_report",
        "machine": {"nproc": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "setup": "PostgreSQL 15 (project defaults) on loopback, report in process, box quiet",
        "load": vars(args),
        **result,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
