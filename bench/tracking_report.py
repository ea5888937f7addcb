"""Figures and the markdown table of the tracking benchmark (bench/tracking.py), combined with
the fleet search benchmark's results (bench/search.py) when present.

``python -m bench.tracking_report`` re-renders tracking.md from the recorded JSON files.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


TIMELINE_STEP_S = 5


def timeline(samples: list[tuple[float, float]], start: float) -> list[dict[str, Any]]:
    """Latency p50/p99 per ``TIMELINE_STEP_S`` of receive time from ``start``; ``samples`` are
    (receive time, latency) in seconds."""
    buckets: dict[int, list[float]] = {}
    for at, latency in samples:
        buckets.setdefault(int((at - start) // TIMELINE_STEP_S), []).append(latency)
    steps = []
    for step, values in sorted(buckets.items()):
        figures = percentiles(values)
        steps.append(
            {
                "from_s": step * TIMELINE_STEP_S,
                "positions": len(values),
                "p50_ms": figures["p50_ms"],
                "p99_ms": figures["p99_ms"],
            }
        )
    return steps


def peak_rss_mb(pid: int | None) -> float | None:
    """VmHWM of a process, MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def markdown(report: dict[str, Any]) -> str:
    """The short table of the report."""
    m = report["machine"]
    lines = [
        "# Tracking benchmark",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, fd limit"
        f" {m['fd_limit']}. {report['setup']}.",
        "",
        "| phase | streams (drivers / customers) | acked fixes/s, steady | stored fixes/s in"
        " window | all acked stored, incl. drain: fixes/s | customer p50 / p95 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        if p["phase"] == "hold":
            lines.append(
                f"| hold | held {p['driver_streams_held']} / {p['customer_streams_held']}"
                f" of {p['target_each']} each | - | - | - | - |"
            )
            continue
        lat = p["customer_latency"]
        welcomed = p.get("driver_streams_welcomed", p["driver_streams"])
        drivers = f"{p['driver_streams']}" + (
            f" ({welcomed} welcomed)" if welcomed < p["driver_streams"] else ""
        )
        lines.append(
            f"| {p['phase']} | {drivers} / {p['customer_streams']} |"
            f" {p['acked_fixes_per_s']} | {p['processed_fixes_per_s']} |"
            f" {p.get('pipeline_fixes_per_s', '-')} (drain {p.get('drain_after_s', '-')} s) |"
            f" {lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']} |"
        )
    lines += [
        "",
        "Acked fixes/s, steady: the mean over the seconds of sending once every stream is open"
        " and sending (flood: without the first and last second; latency: without the 5-s ramp"
        " and the first upload interval, and the last one). The window columns divide by the"
        " whole window, opening and closing of streams included. Customer latency: flood phases"
        " over the whole window; latency phases in the steady state after their warm-up.",
        "",
        *warmup_lines(report["phases"]),
        *snapshot_lines(report["phases"]),
        *loop_lag_lines(report["phases"]),
        "Peak RSS (MB): " + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mb"].items()),
        *cpu_lines(report["phases"], m["nproc"]),
    ]
    return "\n".join(lines + search_lines(RESULTS / "search.json")) + "\n"


def warmup_lines(phases: list[dict[str, Any]]) -> list[str]:
    """The latency phases' warm-up figures, which their table row leaves out."""
    lines = []
    for p in phases:
        if "customer_latency_warmup" not in p:
            continue
        lat = p["customer_latency_warmup"]
        worst = max(p["latency_timeline"], key=lambda b: b["p99_ms"] or 0, default=None)
        lines.append(
            f"- {p['phase']}: customer latency p50 / p95 / p99 {lat['p50_ms']} / {lat['p95_ms']}"
            f" / {lat['p99_ms']} ms during the first {p['warmup_s']:g} s after the ramp"
            + (
                f"; worst 5 s from {worst['from_s']} s of the phase: p99 {worst['p99_ms']} ms"
                if worst
                else ""
            )
        )
    if not lines:
        return []
    return [
        "Latency phases, warm-up (the streams opening: a snapshot for each customer on top of the"
        " pings; the table's latency is the steady state after it, `latency_timeline` in the"
        " JSON has every 5 s):",
        *lines,
        "",
    ]


def snapshot_lines(phases: list[dict[str, Any]]) -> list[str]:
    """How long customers waited for their Track stream's snapshot, per phase recording it."""
    lines = [
        f"- {p['phase']}: p50 / p95 / p99 {w['p50_ms']} / {w['p95_ms']} / {w['p99_ms']} ms"
        for p in phases
        if (w := p.get("track_snapshot_wait"))
    ]
    if not lines:
        return []
    return ["Track stream opened to its snapshot received (the map's first paint):", *lines, ""]


def loop_lag_lines(phases: list[dict[str, Any]]) -> list[str]:
    """How late the customers' load processes woke a 20-ms timer (as customer latency: flood
    phases over the window, latency phases in the steady state), when recorded."""
    lines = [
        f"- {p['phase']}: p50 / p99 / max {g['p50_ms']} / {g['p99_ms']} / {g['max_ms']} ms"
        for p in phases
        if (g := p.get("customer_loop_lag")) and g["p50_ms"] is not None
    ]
    if not lines:
        return []
    return [
        "The customers' load processes' own loop lag (how late they woke a 20-ms timer; their"
        " receive times are stamped as late, and the customer latency above includes it):",
        *lines,
        "",
    ]


def cpu_lines(phases: list[dict[str, Any]], cores: int) -> list[str]:
    """Mean cores each group of processes used per phase (bench/cpu_use.py), when recorded."""
    lines = [
        f"- {p['phase']}: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in p["cpu_cores"].items())
        + f" (of {cores})"
        for p in phases
        if p.get("cpu_cores")
    ]
    if not lines:
        return []
    return ["", "CPU, mean cores used over each phase (streams opening included):", *lines]


def search_lines(path: Path) -> list[str]:
    """SearchDrivers p99 per shape from bench/search.py's results, when recorded."""
    if not path.is_file():
        return ["", "SearchDrivers: not measured (bench/results/search.json missing)."]
    search = json.loads(path.read_text())
    lines = [
        "",
        f"SearchDrivers over {search['drivers']} live drivers (bench/search.py: {search['setup']}):",
        "",
        "| shape | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for shape in search["shapes"]:
        lines.append(
            f"| {shape['shape']} | {shape['p50_ms']} | {shape['p95_ms']} | {shape['p99_ms']} |"
        )
    return lines


def main() -> None:
    """Re-render tracking.md from tracking.json (and search.json)."""
    report = json.loads((RESULTS / "tracking.json").read_text())
    (RESULTS / "tracking.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
