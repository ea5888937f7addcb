"""The end-of-run report: figures as JSON and a static HTML page with inline SVG charts
(throughput and time to delivery over simulated time; no scripts, no external assets)."""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from simulator.metrics import Recorder
from simulator.scenario import Scenario

# Width of a chart's time bucket, simulated seconds.
BUCKET_S = 300.0


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def eta_errors(recorder: Recorder) -> list[float]:
    """Actual minus predicted arrival (simulated seconds) for every ETA a customer was shown
    of a delivered order (positive = later than promised)."""
    errors = []
    for order in recorder.orders.values():
        actual = order.arrived_s if order.arrived_s is not None else order.delivered_s
        if order.outcome != "delivered" or actual is None:
            continue
        errors += [actual - predicted for seen, predicted in order.eta_samples if seen <= actual]
    return errors


def summarize(scenario: Scenario, recorder: Recorder, wall_s: float) -> dict[str, Any]:
    """Every figure of the report."""
    orders = list(recorder.orders.values())
    outcomes = Counter(o.outcome.split(":")[0] for o in orders)
    delivered = [o for o in orders if o.outcome == "delivered" and o.delivered_s is not None]
    times = [o.delivered_s - o.created_s for o in delivered if o.delivered_s is not None]
    on_time = [o for o in delivered if (o.delivered_s or 0.0) <= o.window_end_s]
    sim_s = wall_s * scenario.speed
    drivers = list(recorder.drivers.values())
    km = [d.distance_m / 1000.0 for d in drivers]
    errors = eta_errors(recorder)
    failed_by_reason = Counter(reason for o in orders for reason in o.failures)
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "policy": scenario.policy,
        "speed": scenario.speed,
        "wall_seconds": round(wall_s, 1),
        "simulated_seconds": round(sim_s, 1),
        "orders": {
            "placed": len(orders),
            "by_outcome": dict(sorted(outcomes.items())),
            "unfinished_statuses": sorted({o.outcome for o in orders if ":" in o.outcome}),
        },
        "on_time_rate": len(on_time) / len(delivered) if delivered else None,
        "time_to_delivery_s": {"mean": _mean(times), "p95": percentile(times, 0.95)},
        "drivers": {
            "count": len(drivers),
            "utilisation": (
                sum(d.busy_s for d in drivers) / (len(drivers) * sim_s)
                if drivers and sim_s
                else 0.0
            ),
            "km_total": sum(km),
            "km_per_driver": {d.driver_id: round(d.distance_m / 1000.0, 3) for d in drivers},
        },
        "eta_error_s": {
            "samples": len(errors),
            "mean": _mean(errors),
            "mean_abs": _mean([abs(e) for e in errors]),
            "p95_abs": percentile([abs(e) for e in errors], 0.95),
        },
        "failed_attempts_by_reason": dict(failed_by_reason),
        "returns": {
            "orders_returned": outcomes.get("returned", 0),
            "trips_driven": recorder.counts["return_trips"],
            "km": sum(d.return_m for d in drivers) / 1000.0,
        },
        "pings": {
            "sent": recorder.counts["fixes_sent"],
            "acked": recorder.counts["fixes_acked"],
            "per_wall_s": recorder.counts["fixes_acked"] / wall_s if wall_s else 0.0,
        },
        "counts": dict(sorted(recorder.counts.items())),
        "steps": dict(sorted(recorder.steps.items())),
        "notes": recorder.notes,
        "series": series(recorder),
    }


def series(recorder: Recorder) -> dict[str, list[list[float]]]:
    """Deliveries per bucket and time to delivery per delivery, over simulated time."""
    buckets: Counter[int] = Counter()
    latency = []
    for order in recorder.orders.values():
        if order.outcome == "delivered" and order.delivered_s is not None:
            buckets[int(order.delivered_s // BUCKET_S)] += 1
            latency.append([order.delivered_s, order.delivered_s - order.created_s])
    last = max(buckets, default=0)
    throughput = [[b * BUCKET_S, float(buckets.get(b, 0))] for b in range(last + 1)]
    return {"deliveries_per_bucket": throughput, "time_to_delivery": sorted(latency)}


def svg_chart(title: str, points: list[list[float]], bars: bool, unit: str) -> str:
    """A small inline SVG chart of (x seconds, y) points."""
    width, height, pad = 560, 220, 40
    if not points:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    max_x = max(p[0] for p in points) or 1.0
    max_y = max(p[1] for p in points) or 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (width - 2 * pad) * x / max_x,
            height - pad - (height - 2 * pad) * y / max_y,
        )

    shapes = []
    if bars:
        bar_w = max(2.0, (width - 2 * pad) / (len(points) + 1) * 0.8)
        for x, y in points:
            px, py = xy(x, y)
            shapes.append(
                f'<rect x="{px:.1f}" y="{py:.1f}" width="{bar_w:.1f}" '
                f'height="{height - pad - py:.1f}" fill="#3b7dd8"/>'
            )
    else:
        coords = " ".join("{:.1f},{:.1f}".format(*xy(x, y)) for x, y in points)
        shapes.append(f'<polyline points="{coords}" fill="none" stroke="#d8603b"/>')
        shapes += ['<circle cx="{:.1f}" cy="{:.1f}" r="2.5"/>'.format(*xy(x, y)) for x, y in points]
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        f'stroke="#333"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>'
        f'<text x="{pad}" y="{pad - 8}" font-size="11">{max_y:.0f} {html.escape(unit)}</text>'
        f'<text x="{width - pad}" y="{height - 12}" font-size="11" text-anchor="end">'
        f"{max_x / 60:.0f} min simulated</text>"
    )
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f"{axes}{''.join(shapes)}</svg>"
    )


def render_html(summary: dict[str, Any]) -> str:
    """The static report page."""
    figures = {k: v for k, v in summary.items() if k != "series"}
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td><pre>{html.escape(json.dumps(v, indent=1))}</pre>"
        "</td></tr>"
        for k, v in figures.items()
    )
    charts = svg_chart(
        "Deliveries per 5 simulated minutes",
        summary["series"]["deliveries_per_bucket"],
        True,
        "deliveries",
    ) + svg_chart(
        "Time to delivery (by delivery time)",
        summary["series"]["time_to_delivery"],
        False,
        "s",
    )
    name = html.escape(str(summary["scenario"]))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Simulation {name}</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;vertical-align:top;"
        "padding-right:1em}pre{margin:0}</style></head>"
        f"<body><h1>Simulation report: {name}</h1>{charts}<table>{rows}</table></body></html>"
    )


def write(summary: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.html`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    html_path.write_text(render_html(summary))
    return json_path, html_path
