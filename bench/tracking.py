"""Live-tracking benchmark, end to end: driver apps -> gateway -> Redis streams -> tracking
processors (live state, history, snapping, geofences, fan-out, ETAs) -> customers' Track
streams, all real processes on this machine, loopback only.

Starts its own PostgreSQL and Redis (temporary dirs, free ports), ``--gateways`` gateway
processes sharing one port (SO_REUSEPORT) and ``--trackers`` tracking processes (each
processes pings and serves Track streams), puts drivers and their active orders (PICKED_UP,
one per driver, tracking tokens) straight into the database, and runs phases, each bounded
in time. The load is the city simulator's load mode (``clients/python/simulator/load.py``,
the same generator as ``lastmile simulate --load``) in ``--workers`` processes per side: driver
apps on their ``Connect`` streams moving along real roads of the city with GPS noise, and
customers on the seeded orders' ``Track`` streams. Each phase is a load-mode ``Phase``:

* ``flood1`` / ``flood5``: driver streams sending batches of 1 fix (the active-mode worst
  case) / 5 fixes (the default upload batch: 5 s of 1 s fixes) back to back (the next batch
  once the previous one is acked), all streams opened first (``FLOOD_RAMP_S``); sustained
  fixes/s acked, processed into live state + history, and delivered to watching customers;
* ``latency1`` / ``latency5``: ``--rate`` drivers each capturing one fix per second and sending
  it at once / in batches of 5 every 5 s, a customer on every order; ping-to-customer latency
  = receive time - the newest fix's capture time (same clock). The first ``--warmup`` seconds
  after the ramp are reported apart (``customer_latency_warmup``): 10,000 streams opening
  within seconds (a snapshot for each customer) cost what the steady rate does not;
  ``latency_timeline`` gives p50/p99 per 5 s over the whole phase, ``track_snapshot_wait``
  how long the customers waited for their snapshots;
* ``hold``: ``--hold`` idle driver streams and as many Track streams opened over a ramp and
  held; how many were held at the end (and the snapshot waits).

The per-driver event rate guard of the gateway is lifted for the benchmark (flood phases send
back to back on purpose; the guard would measure itself, not the pipeline).

The driver-side load processes run at a lower CPU priority (``--sender-nice``, 10): in
production the phones bring their own CPUs, here the senders share two cores with the servers;
niced, they take what the servers leave, and the acked rate shows whether they still keep the
asked rate. The customer side stays at normal priority: it stamps receive times, and a starved
receiver would add its own wait to the latency it measures.

Every phase also reports how many driver streams got their Welcome (a saturated gateway admits
new streams slowly, and gRPC core gives up on some) and the mean cores each group of processes
used (:mod:`bench.cpu_use`: the servers, the load generator, the whole box). Peak RSS (VmHWM)
of every process is read from /proc. Writes bench/results/<--output>.json and .md
(``--no-record``: prints only). Usage::

    .venv/bin/python -m bench.tracking --seconds 20 --rate 5000 --hold 20000
    .venv/bin/python -m bench.tracking --seconds 5 --flood-drivers 100 --flood-customers 100 \
        --rate 100 --hold 200 --hold-seconds 3 --ramp 2 --no-record   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any

from simulator.city import road_graph
from simulator.load import LoadPlan, Phase, merge, raise_fd_limit, run_worker, steady_rate

from bench.cpu_use import CpuMeter
from bench.ingest import history_count, machine
from bench.servers import own_servers
from bench.tracking_fleet import TENANT, backlog, seed
from bench.tracking_report import markdown, peak_rss_mb, percentiles, timeline
from core.settings import PROJECT_ROOT, Settings
from ops.servers import ManagedProcess
from ops.servers.process import free_port
from ops.stack import service_process, start_service

RESULTS = PROJECT_ROOT / "bench" / "results"
# The load's drivers drive the roads of a circle in the middle of the orders' area.
DRIVE_CENTER = (35.8925, 14.4875)
DRIVE_RADIUS_M = 1500.0
# Flood streams open over this ramp and start flooding together at its end.
FLOOD_RAMP_S = 3.0


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


class Bench:
    """The running servers and the phases; see the module docstring."""

    def __init__(
        self, args: argparse.Namespace, settings: Settings, fleet: list[tuple[str, str]]
    ) -> None:
        self.args = args
        self.settings = settings
        self.fleet = fleet
        self.gateway = f"{settings.host}:{settings.gateway_port}"
        self.trackers: list[str] = []
        self.history_before = 0
        self.started_at = 0.0
        self.acked = 0
        self.sent = 0
        self._taken = 0
        context = mp.get_context("spawn")
        # Once per pool process (a nice value cannot be lowered again without privileges).
        self.senders = context.Pool(args.workers, initializer=os.nice, initargs=(args.sender_nice,))
        self.watchers = context.Pool(args.workers)
        # Root pids of the servers by name, for the CPU each used during a phase.
        self.servers: dict[str, list[int]] = {}
        self.cpu_cores: dict[str, float] = {}

    def close(self) -> None:
        """End the load processes."""
        self.senders.terminate()
        self.watchers.terminate()

    def take(self, count: int) -> list[tuple[str, str]]:
        """Drivers not used by an earlier sending phase, so that each phase's history and
        live state start clean."""
        drivers = self.fleet[self._taken : self._taken + count]
        if len(drivers) < count:
            raise ValueError("fleet too small for the phases; seed more drivers")
        self._taken += count
        return drivers

    def plan(self, phase: Phase, index: int, drivers: list[str], tokens: list[str]) -> LoadPlan:
        """One load process's share of a phase."""
        return LoadPlan(
            settings=self.settings,
            addresses={"gateway": self.gateway, "tracking": self.trackers[0]},
            tenant=TENANT,
            phase=phase,
            drivers=tuple(drivers),
            tokens=tuple(tokens),
            trackers=tuple(self.trackers),
            center=DRIVE_CENTER,
            radius_m=DRIVE_RADIUS_M,
            seed=7,
            index=index,
        )

    def run(
        self, drivers: list[tuple[str, str]], customers: list[str], phase: Phase
    ) -> tuple[dict[str, Any], dict[str, Any], float, int]:
        """One phase: driver and customer load processes side by side (simulator load mode);
        their merged figures, the window and the fixes stored meanwhile."""
        w = self.args.workers
        driver_plans = [
            self.plan(phase, i, part, [])
            for i, part in enumerate(_split([driver for driver, _ in drivers], w))
            if part
        ]
        # Customers stay until the drivers' last batches are through.
        watching = dataclasses.replace(phase, seconds=phase.seconds + 2)
        customer_plans = [
            self.plan(watching, w + i, [], part)
            for i, part in enumerate(_split(customers, w))
            if part
        ]
        before = asyncio.run(history_count(self.settings.database_url))
        self.history_before = before
        self.acked = self.sent = 0
        meter = CpuMeter(self.servers)
        meter.start()
        started = time.monotonic()
        self.started_at = time.time()  # the load's clock for receive times
        pending_c = [self.watchers.apply_async(run_worker, (plan,)) for plan in customer_plans]
        pending_d = [self.senders.apply_async(run_worker, (plan,)) for plan in driver_plans]
        d = merge([p.get() for p in pending_d])
        self.cpu_cores = meter.stop()
        self.acked = d.get("fixes_acked", 0)
        self.sent = d.get("fixes_sent", 0)
        # The drivers' streams' own time (the longest process), set-up excluded.
        window = d["wall_s"] or time.monotonic() - started
        processed = asyncio.run(history_count(self.settings.database_url)) - before
        c = merge([p.get() for p in pending_c])
        return d, c, window, processed

    def flood(self, size: int) -> dict[str, Any]:
        """Back-to-back batches from ``--flood-drivers`` streams."""
        drivers = self.take(self.args.flood_drivers)
        watched = [token for _, token in drivers[: self.args.flood_customers]]
        phase = Phase("flood", size, 0.0, self.args.seconds, ramp_s=FLOOD_RAMP_S)
        d, c, window, processed = self.run(drivers, watched, phase)
        window -= phase.ramp_s  # streams opening: nothing is sent yet
        return {
            "phase": f"flood{size}",
            "driver_streams": len(drivers),
            "driver_streams_welcomed": d.get("connected", 0),
            "fixes_per_message": size,
            "customer_streams": len(watched),
            "seconds": round(window, 1),
            # Without the first and the last second (streams opening, the last batches).
            "acked_fixes_per_s": round(steady_rate(d["acked_by_second"], 1, 1)),
            "processed_fixes_per_s": round(processed / window),
            "customer_positions_per_s": round(len(c["latencies"]) / window),
            "customer_latency": percentiles(c["latencies"]),
            "customer_loop_lag": percentiles(c["loop_lags"]),
            "errors": d["errors"] + c["errors"],
            "first_error": d["first_error"] or c["first_error"],
        }

    def phase(self, name: str) -> dict[str, Any]:
        """Run the phase called ``name`` (flood<N>, latency<N>, hold), let the processors
        drain, and add what was sent, acked and finally stored."""
        if name.startswith("flood"):
            figures = self.flood(int(name.removeprefix("flood")))
        elif name.startswith("latency"):
            figures = self.latency(int(name.removeprefix("latency") or 1))
        elif name == "hold":
            figures = self.hold()
        else:
            raise ValueError(f"unknown phase {name!r}: flood<N>, latency<N> or hold")
        figures["cpu_cores"] = self.cpu_cores
        figures["drain_after_s"] = self.drain()
        stored = asyncio.run(history_count(self.settings.database_url)) - self.history_before
        figures["sent_fixes"] = self.sent
        figures["acked_fixes"] = self.acked
        figures["stored_fixes_after_drain"] = stored
        if "seconds" in figures:  # every acked fix through the pipeline, drain included
            busy = figures["seconds"] + figures["drain_after_s"]
            figures["pipeline_fixes_per_s"] = round(stored / busy)
        return figures

    def drain(self, limit_s: float = 180.0) -> float:
        """Wait (bounded) until the processors caught up with every ping shard (group lag and
        pending entries at zero): the next phase starts without a backlog."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s and asyncio.run(backlog(self.settings)):
            time.sleep(1.0)
        return round(time.monotonic() - started, 1)

    def latency(self, size: int) -> dict[str, Any]:
        """``--rate`` drivers capturing one fix per second, sending ``size`` fixes every
        ``size`` seconds; a customer on each order; latency from the newest fix's capture."""
        drivers = self.take(self.args.rate)
        watched = [token for _, token in drivers]
        warmup = self.args.warmup
        phase = Phase("rate", size, float(size), warmup + self.args.seconds, ramp_s=5.0)
        d, c, window, processed = self.run(drivers, watched, phase)
        steady_from = self.started_at + phase.ramp_s + warmup
        samples = list(zip(c["latency_at"], c["latencies"], strict=True))
        lags = list(zip(c["loop_lag_at"], c["loop_lags"], strict=True))
        return {
            "phase": f"latency{size}",
            "fixes_per_message": size,
            "driver_streams": len(drivers),
            "driver_streams_welcomed": d.get("connected", 0),
            "target_fixes_per_s": len(drivers),
            "customer_streams": len(watched),
            "seconds": round(window, 1),
            # Once every stream is open and sending (after the ramp and the first upload
            # interval), until the last full upload interval.
            "acked_fixes_per_s": round(
                steady_rate(d["acked_by_second"], round(phase.ramp_s + phase.interval_s), size + 1)
            ),
            "processed_fixes_per_s": round(processed / window),
            "customer_positions": len(c["latencies"]),
            "warmup_s": warmup,
            "customer_latency": percentiles([lat for at, lat in samples if at >= steady_from]),
            "customer_latency_warmup": percentiles(
                [lat for at, lat in samples if at < steady_from]
            ),
            "customer_loop_lag": percentiles([lag for at, lag in lags if at >= steady_from]),
            "latency_timeline": timeline(samples, self.started_at),
            "track_snapshot_wait": percentiles(c["snapshot_waits"]),
            "errors": d["errors"] + c["errors"],
            "first_error": d["first_error"] or c["first_error"],
        }

    def hold(self) -> dict[str, Any]:
        """``--hold`` idle driver streams and Track streams, opened over a ramp."""
        drivers = self.fleet[: self.args.hold]
        watched = [token for _, token in drivers]
        phase = Phase("hold", 1, 0.0, self.args.hold_seconds, ramp_s=self.args.ramp)
        d, c, _, _ = self.run(drivers, watched, phase)
        return {
            "phase": "hold",
            "target_each": len(drivers),
            "driver_streams_connected": d.get("connected", 0),
            "driver_streams_held": d.get("held", 0),
            "customer_snapshots": c.get("snapshots", 0),
            "track_snapshot_wait": percentiles(c["snapshot_waits"]),
            "customer_streams_held": c.get("track_held", 0),
            "errors": d["errors"] + c["errors"],
            "first_error": d["first_error"] or c["first_error"],
            "load_generator_peak_rss_mb": round(max(d["peak_rss_kb"], c["peak_rss_kb"]) / 1024),
        }


def start_services(
    args: argparse.Namespace, settings: Settings, log_dir: Path
) -> tuple[list[ManagedProcess], list[str]]:
    """Tracking processes (own ports) and gateways (one shared port)."""
    processes, trackers = [], []
    for _ in range(args.trackers):
        own = settings.replace(tracking_port=free_port())
        process = service_process("tracking", own, log_dir)
        address = f"{own.host}:{own.tracking_port}"
        start_service(process, address)
        processes.append(process)
        trackers.append(address)
    for _ in range(args.gateways):
        process = service_process("gateway", settings, log_dir)
        start_service(process, f"{settings.host}:{settings.gateway_port}")
        processes.append(process)
    return processes, trackers


def main() -> None:
    """Start the servers and services, run the phases, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--trackers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="load processes per side")
    parser.add_argument(
        "--sender-nice", type=int, default=10, help="nice value of the driver-side load processes"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="per flood/latency phase")
    parser.add_argument("--flood-drivers", type=int, default=1000)
    parser.add_argument("--flood-customers", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=5000, help="fixes/s of the latency phase")
    parser.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="seconds after the ramp of a latency phase whose latencies are reported apart",
    )
    parser.add_argument("--hold", type=int, default=20000, help="streams of each kind held")
    parser.add_argument("--hold-seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds to open held streams")
    parser.add_argument("--phases", default="flood1,flood5,latency1,latency5,hold")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--output", default="tracking", help="results name in bench/results/")
    args = parser.parse_args()
    fd_limit = raise_fd_limit()  # inherited by the servers started below
    processes: list[ManagedProcess] = []
    phases: list[dict[str, Any]] = []
    memory: dict[str, float | None] = {}
    bench: Bench | None = None
    with own_servers("lastmile-bench-tracking-") as servers:
        base, postgres, redis_server = servers.base, servers.postgres, servers.redis
        settings = servers.settings.replace(
            db_pool_max=8,
            # Flood phases send back to back on purpose: the guard would measure itself.
            gateway_driver_rate_per_s=1e6,
            gateway_driver_burst=1_000_000,
        )
        try:
            road_graph(settings, None)  # the load's own road graph, built before its processes
            processes, trackers = start_services(args, settings, base / "logs")
            sending = [p for p in args.phases.split(",") if p != "hold"]
            count = max(
                args.hold,
                sum(args.flood_drivers if p.startswith("flood") else args.rate for p in sending),
            )
            fleet = asyncio.run(seed(settings, count))
            bench = Bench(args, settings, fleet)
            bench.trackers = trackers
            bench.servers = {
                "tracking": [p.pid for p in processes if p.name == "tracking" and p.pid],
                "gateway": [p.pid for p in processes if p.name == "gateway" and p.pid],
                "redis": [redis_server.pid] if redis_server.pid else [],
                "postgres": [postgres.pid] if postgres.pid else [],
            }
            for phase in args.phases.split(","):
                print(f"phase {phase}...", flush=True)
                phases.append(bench.phase(phase))
                print(json.dumps(phases[-1]), flush=True)
            for i, process in enumerate(processes):
                memory[f"{process.name}-{i}"] = peak_rss_mb(process.pid)
            memory["redis"] = peak_rss_mb(redis_server.pid)
            memory["postgres-postmaster"] = peak_rss_mb(postgres.pid)
            errors = {}
            for name in ("gateway", "tracking"):
                text = (base / "logs" / f"{name}.log").read_text(errors="replace")
                errors[name] = text.count('"level": "ERROR"') + text.count("Traceback")
                kept = PROJECT_ROOT / ".lastmile" / "bench-logs"  # .lastmile is not versioned
                kept.mkdir(parents=True, exist_ok=True)
                shutil.copy(base / "logs" / f"{name}.log", kept / f"tracking-bench-{name}.log")
        finally:
            if bench is not None:
                bench.close()
            for process in reversed(processes):
                process.stop(grace=10.0)
    report = {
        "benchmark": "tracking",
        "machine": {**machine(), "fd_limit": fd_limit},
        "setup": (
            f"{args.gateways} gateway + {args.trackers} tracking processes, PostgreSQL, Redis and"
            f" {args.workers}+{args.workers} load-generator processes (simulator load mode; the"
            f" driver side at nice {args.sender_nice}) on one box, loopback"
        ),
        "phases": phases,
        "peak_rss_mb": memory,
        "server_log_errors": errors,
    }
    print(json.dumps(report, indent=2))
    table = markdown(report)
    print(table)
    if not args.no_record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.output}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"{args.output}.md").write_text(table)


if __name__ == "__main__":
    main()
