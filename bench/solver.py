"""Solver benchmark: every backend over the shared Solomon and Li & Lim instances.

Each (backend, instance) runs in a fresh worker process, bounded by the time limit (plus
model building), and every answer goes through the full-precision feasibility checker.
Gaps, as the task defines them:

* Solomon: the solution's distance with each arc truncated to one decimal (DIMACS) against
  ``solomon/bks_distance_only_dimacs.csv``; feasibility still in full precision.
* Li & Lim: the full-precision distance against ``li_lim_100/bks.csv`` (hierarchical BKS:
  fewer vehicles first, so a distance-only solver can land below it; vehicles are reported).
* Gehring & Homberger (optional): full-precision distance against its hierarchical bks.csv.

Writes bench/results/solver.json and solver.md. Usage::

    .venv/bin/python -m bench.solver --time-limit 10 --jobs 1 [--subset 8] [--backends pyvrp]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dispatch.solver.backends import BACKENDS
from dispatch.solver.feasibility import check
from dispatch.solver.formats import load_instance
from dispatch.solver.model import with_fleet_minimised

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "vrp"
RESULTS = REPO / "bench" / "results"
# set name -> (folder, BKS table, gap measured on the truncated-arc cost instead of distance)
SETS = {
    "solomon": ("solomon", "bks_distance_only_dimacs.csv", True),
    "li_lim": ("li_lim_100", "bks.csv", False),
    "gh": ("gehring_homberger", "bks.csv", False),
}


def _bks(folder: str, table: str) -> dict[str, tuple[int, float]]:
    with (DATA / folder / table).open() as f:
        return {
            r["instance"]: (int(r["vehicles"]), float(r["distance"])) for r in csv.DictReader(f)
        }


def _spread(names: list[str], count: int) -> list[str]:
    """``count`` instances spread evenly over the sorted list (every family gets some)."""
    if count <= 0 or count >= len(names):
        return names
    return (
        [names[round(k * (len(names) - 1) / (count - 1))] for k in range(count)]
        if count > 1
        else names[:1]
    )


def _run_one(job: tuple[str, str, str, float, int, bool]) -> dict[str, Any]:
    """Solve one instance with one backend and check it (runs in a worker process)."""
    set_name, path, backend, time_limit, seed, min_vehicles = job
    problem = load_instance(Path(path))
    if min_vehicles:
        problem = with_fleet_minimised(problem)
    started = time.perf_counter()
    solution = BACKENDS[backend]().solve(problem, time_limit, seed)
    wall = time.perf_counter() - started
    report = check(problem, solution)
    return {
        "set": set_name,
        "instance": problem.name,
        "backend": backend,
        "feasible": report.feasible,
        "violations": report.violations[:3] + solution.notes,
        "vehicles": report.vehicles,
        "distance": report.distance,
        "objective_cost": round(report.cost, 4),  # truncated arcs for Solomon-format files
        "wall_s": round(wall, 2),
    }


def _machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg_start": os.getloadavg()}


def _gap(row: dict[str, Any], bks: dict[str, tuple[int, float]], truncated: bool) -> None:
    best_vehicles, best = bks[row["instance"]]
    value = row["objective_cost"] if truncated else row["distance"]
    row["bks_vehicles"], row["bks_distance"] = best_vehicles, best
    row["gap_pct"] = round(100.0 * (value - best) / best, 3) if row["feasible"] else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted({(r["set"], r["backend"]) for r in rows}):
        mine = [r for r in rows if (r["set"], r["backend"]) == key]
        gaps = [r["gap_pct"] for r in mine if r["gap_pct"] is not None]
        out[f"{key[0]}/{key[1]}"] = {
            "instances": len(mine),
            "infeasible": sum(not r["feasible"] for r in mine),
            "mean_gap_pct": round(statistics.mean(gaps), 3) if gaps else None,
            "max_gap_pct": max(gaps) if gaps else None,
            # Negative gaps (below a hierarchical BKS) do not offset positive ones here.
            "mean_positive_gap_pct": (
                round(statistics.mean(max(g, 0.0) for g in gaps), 3) if gaps else None
            ),
            # Below a hierarchical BKS by using more vehicles is not a like-for-like win.
            "more_vehicles_than_bks": sum(
                r["feasible"] and r["vehicles"] > r["bks_vehicles"] for r in mine
            ),
        }
    return out


def _markdown(result: dict[str, Any]) -> str:
    backends = result["backends"]
    lines = [
        f"# Solver benchmark ({result['time_limit_s']} s per instance, seed {result['seed']}, "
        f"objective: {result['objective']})",
        "",
        f"Machine: {result['machine']['nproc']} cores, {result['machine']['cpu']}; load average "
        f"at start {result['machine']['loadavg_start']}, at end {result['machine']['loadavg_end']}"
        f"; jobs {result['jobs']}. Gap in %: Solomon = truncated-arc distance vs the "
        "distance-only DIMACS BKS; Li & Lim = full-precision distance vs the hierarchical BKS. "
        "Every solution checked in full precision; `INF` = infeasible or incomplete. "
        + result.get("note", ""),
        "",
        "| set | backend | instances | infeasible | mean gap % | mean max(gap, 0) % | max gap % "
        "| more veh. than BKS |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in result["summary"].items():
        set_name, backend = key.split("/")
        lines.append(
            f"| {set_name} | {backend} | {s['instances']} | {s['infeasible']} | "
            f"{s['mean_gap_pct']} | {s['mean_positive_gap_pct']} | {s['max_gap_pct']} | "
            f"{s['more_vehicles_than_bks']} |"
        )
    lines += ["", "| instance | BKS (veh / dist) | " + " | ".join(backends) + " |"]
    lines.append("|---|---|" + "---:|" * len(backends))
    by_instance: dict[str, dict[str, dict[str, Any]]] = {}
    for r in result["rows"]:
        by_instance.setdefault(r["instance"], {})[r["backend"]] = r
    for name, per in by_instance.items():
        first = next(iter(per.values()))
        cells = [
            f"{per[b]['gap_pct']} ({per[b]['vehicles']} veh)"
            if b in per and per[b]["feasible"]
            else "INF"
            for b in backends
        ]
        lines.append(
            f"| {name} | {first['bks_vehicles']} / {first['bks_distance']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _render(path: Path) -> int:
    """Recompute the summary and Markdown of a stored run (no solving)."""
    result = json.loads(path.read_text())
    result["summary"] = _summary(result["rows"])
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(_markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--subset", type=int, default=0, help="instances per set (0 = all)")
    parser.add_argument("--sets", default="solomon,li_lim", help="comma list of " + ",".join(SETS))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--min-vehicles", action="store_true", help="hierarchical objective (fewest vehicles)"
    )
    parser.add_argument("--out", default="solver", help="results file stem under bench/results")
    parser.add_argument(
        "--render-only", action="store_true", help="rebuild summary and .md from the .json"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        return _render(RESULTS / f"{args.out}.json")
    backends = args.backends.split(",")
    jobs: list[tuple[str, str, str, float, int, bool]] = []
    tables = {}
    for set_name in args.sets.split(","):
        folder, table, truncated = SETS[set_name]
        tables[set_name] = (_bks(folder, table), truncated)
        names = _spread(sorted(tables[set_name][0]), args.subset)
        for name in names:
            path = str(DATA / folder / f"{name}.txt")
            jobs += [
                (set_name, path, b, args.time_limit, args.seed, args.min_vehicles) for b in backends
            ]
    machine = _machine()
    rows: list[dict[str, Any]] = []
    # A fresh process per run keeps one solver's memory and threads away from the next.
    with ProcessPoolExecutor(max_workers=args.jobs, max_tasks_per_child=1) as pool:
        for row in pool.map(_run_one, jobs):
            bks, truncated = tables[row["set"]]
            _gap(row, bks, truncated)
            rows.append(row)
            print(
                f"{row['backend']:8} {row['instance']:8} gap {row['gap_pct']} "
                f"veh {row['vehicles']} wall {row['wall_s']}",
                flush=True,
            )
    machine["loadavg_end"] = os.getloadavg()
    result = {
        "time_limit_s": args.time_limit,
        "seed": args.seed,
        "objective": "fewest vehicles, then distance" if args.min_vehicles else "distance only",
        "jobs": args.jobs,
        "backends": backends,
        "machine": machine,
        "summary": _summary(rows),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(_markdown(result))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
