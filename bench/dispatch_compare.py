"""Instant dispatch vs the greedy baseline: the same seeded order stream, both policies.

For each policy a fresh local platform is started on free loopback ports (PostgreSQL, Redis,
SeaweedFS, the four services, the Envoy edge, as the test fixture does), the scenario is played
by the simulator with ``--policy baseline`` (the operator's desk: nearest idle driver by
straight line, AssignOrder; the instant matcher is switched off so it does not compete) or
``--policy platform`` (the instant matcher with offers), and the figures are compared: mean
time to delivery, driver kilometres, late orders (delivered after the window, or never).

Dispatch settings are wall-clock seconds while the simulation runs faster than real time, so
the micro-batch interval and the offer timeout are scaled down with the scenario's speed
(``--batch-sim-s``/``--timeout-sim-s`` are simulated seconds).

    .venv/bin/python -m bench.dispatch_compare [--scenario scenarios/compare-lunch.toml]

Writes bench/results/dispatch_compare.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from simulator.cli import simulate
from simulator.scenario import Scenario, load

from bench.ingest import machine
from core.settings import PROJECT_ROOT, Settings
from ops import health
from ops.graph import build_graph
from ops.servers import EnvoyServer, ManagedProcess, PostgresServer, RedisServer, SeaweedS3
from ops.servers.process import free_port
from ops.stack import SERVICES, edge_config, service_process

RESULTS = PROJECT_ROOT / "bench" / "results"
GRAPH_CACHE = PROJECT_ROOT / ".lastmile" / "test-cache" / "graph"
CITY = PROJECT_ROOT / "maps" / "malta.osm.pbf"
START_TIMEOUT_S = 90.0
TARGET_IMPROVEMENT = 0.15


def platform_settings(base: Path, pg: PostgresServer, rd: RedisServer, s3: SeaweedS3) -> Settings:
    """Every listener on a free port, the graph from the shared cache."""
    graph = build_graph(CITY, GRAPH_CACHE)
    return Settings.from_env({}).replace(
        host="127.0.0.1",
        gateway_port=free_port(),
        tracking_port=free_port(),
        dispatch_port=free_port(),
        pod_port=free_port(),
        edge_port=free_port(),
        edge_admin_port=free_port(),
        metrics_port=0,
        data_dir=base,
        database_url=pg.dsn,
        redis_url=rd.url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        graph_dir=graph.parent,
        osm_pbf=CITY,
        shutdown_grace_s=2.0,
        log_level="WARNING",
    )


def run_policy(scenario: Scenario, policy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh platform, one simulation; the simulator's summary."""
    base = Path(tempfile.mkdtemp(prefix=f"lastmile-bench-dispatch-{policy}-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user
    pg = PostgresServer(base / "pg" / "data", free_port())
    rd = RedisServer(base / "redis", free_port())
    defaults = Settings()
    s3 = SeaweedS3(base / "s3", free_port(), defaults.s3_access_key, defaults.s3_secret_key)
    processes: list[ManagedProcess] = []
    edge: EnvoyServer | None = None
    try:
        for server in (pg, rd, s3):
            server.start()
        settings = platform_settings(base, pg, rd, s3).replace(
            instant_enabled=policy == "platform",
            instant_batch_interval_s=args.batch_sim_s / scenario.speed,
            instant_offer_timeout_s=args.timeout_sim_s / scenario.speed,
            instant_sweep_interval_s=min(1.0, args.timeout_sim_s / scenario.speed / 4),
        )
        s3.ensure_bucket(settings.proof_bucket)
        for name in SERVICES:
            processes.append(service_process(name, settings, base / "logs"))
            processes[-1].start()
        for name, process in zip(SERVICES, processes, strict=True):
            address = f"{settings.host}:{settings.port_of(name)}"
            process.wait_ready(functools.partial(health.is_serving, address), START_TIMEOUT_S)
        config = edge_config(settings, base / "envoy" / "envoy.yaml")
        edge = EnvoyServer(config, settings.edge_admin_port, log_path=base / "logs" / "envoy.log")
        edge.start()
        chosen = dataclasses.replace(scenario, policy=policy)
        print(f"{policy}: running {scenario.name} at {scenario.speed}x", flush=True)
        summary = asyncio.run(
            simulate(chosen, settings, f"{settings.host}:{settings.edge_port}", base / "report")
        )
        log = (base / "logs" / "dispatch.log").read_text(errors="replace")
        summary["dispatch_log_errors"] = log.count("Traceback")
        return summary
    finally:
        if edge is not None:
            edge.stop()
        for process in reversed(processes):
            process.stop(grace=10.0)
        for server in (s3, rd, pg):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The compared figures of one run."""
    outcomes = summary["orders"]["by_outcome"]
    delivered = outcomes.get("delivered", 0)
    on_time = summary["on_time_rate"] or 0.0
    late_delivered = round(delivered * (1.0 - on_time))
    never = summary["orders"]["placed"] - delivered - outcomes.get("cancelled", 0)
    return {
        "orders_placed": summary["orders"]["placed"],
        "delivered": delivered,
        "outcomes": outcomes,
        "mean_time_to_delivery_s": summary["time_to_delivery_s"]["mean"],
        "p95_time_to_delivery_s": summary["time_to_delivery_s"]["p95"],
        "driver_km": round(summary["drivers"]["km_total"], 2),
        "late_orders": late_delivered + never,
        "late_delivered": late_delivered,
        "not_delivered": never,
        "offers_accepted": summary["counts"].get("offers_accepted", 0),
        "offers_declined": summary["counts"].get("offers_declined", 0),
        "offers_withdrawn": summary["counts"].get("offers_withdrawn", 0),
        "wall_seconds": summary["wall_seconds"],
        "dispatch_log_tracebacks": summary["dispatch_log_errors"],
        "notes": summary["notes"][:10],
    }


def improvement(base: float | None, new: float | None) -> float | None:
    """Relative reduction (0.2 = 20% less than the baseline)."""
    if not base or new is None:
        return None
    return round((base - new) / base, 4)


def markdown(report: dict[str, Any]) -> str:
    """The human-readable table."""
    b, p, imp = report["baseline"], report["platform"], report["improvement"]
    rows = [
        ("mean time to delivery (s)", "mean_time_to_delivery_s", "time_to_delivery"),
        ("p95 time to delivery (s)", "p95_time_to_delivery_s", None),
        ("driver km", "driver_km", "driver_km"),
        ("late orders", "late_orders", None),
        ("delivered", "delivered", None),
    ]
    lines = [
        f"# Instant dispatch vs greedy baseline ({report['scenario']}, seed {report['seed']})",
        "",
        report["setup"],
        "",
        "| figure | baseline | platform | improvement |",
        "|---|---|---|---|",
    ]
    for label, key, imp_key in rows:
        gain = imp.get(imp_key) if imp_key else None
        shown = f"{gain * 100:.1f}%" if gain is not None else ""
        lines.append(f"| {label} | {_fmt(b[key])} | {_fmt(p[key])} | {shown} |")
    lines += ["", f"**Verdict:** {report['verdict']}", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> None:
    """Run both policies on the same seed; print and record the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario", default=str(PROJECT_ROOT / "scenarios" / "compare-lunch.toml")
    )
    parser.add_argument("--batch-sim-s", type=float, default=10.0, help="micro-batch interval")
    parser.add_argument("--timeout-sim-s", type=float, default=60.0, help="offer timeout")
    parser.add_argument("--policies", default="baseline,platform")
    parser.add_argument("--output", default="dispatch_compare")
    args = parser.parse_args()
    scenario = load(Path(args.scenario))
    started = time.monotonic()
    runs = {
        policy: figures(run_policy(scenario, policy, args)) for policy in args.policies.split(",")
    }
    b, p = runs["baseline"], runs["platform"]
    gains = {
        "time_to_delivery": improvement(b["mean_time_to_delivery_s"], p["mean_time_to_delivery_s"]),
        "driver_km": improvement(b["driver_km"], p["driver_km"]),
    }
    best = max((g for g in gains.values() if g is not None), default=0.0)
    met = best >= TARGET_IMPROVEMENT and p["late_orders"] <= b["late_orders"]
    report = {
        "benchmark": "dispatch_compare",
        "scenario": scenario.name,
        "seed": scenario.seed,
        "machine": machine(),
        "setup": (
            f"{scenario.fleet.drivers} drivers, {scenario.origins.count} kitchens,"
            f" {b['orders_placed']} orders over {scenario.duration_s / 60:.0f} simulated minutes"
            f" at {scenario.speed}x; one fresh local platform per policy; micro-batch"
            f" {args.batch_sim_s} sim s, offer timeout {args.timeout_sim_s} sim s."
        ),
        "baseline": b,
        "platform": p,
        "improvement": gains,
        "target": "at least 15% better on time to delivery or driver km, no more late orders",
        "target_met": met,
        "verdict": (
            f"target {'MET' if met else 'NOT met'}: time {_pct(gains['time_to_delivery'])},"
            f" km {_pct(gains['driver_km'])}, late orders {b['late_orders']} -> {p['late_orders']}"
        ),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.output}.md").write_text(markdown(report))
    print(markdown(report))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}% better"


if __name__ == "__main__":
    main()
