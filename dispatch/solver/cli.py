"""``lastmile solve``: solve a Solomon or Li & Lim benchmark file and print the JSON answer.

The answer is ``{"instance", "vehicles", "distance", "routes"}``: ``distance`` is the
full-double-precision Euclidean total and ``routes`` lists customer ids as numbered in the
file, depot left out. Only solutions that pass the feasibility checker are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dispatch.solver.backends import BACKENDS, NoFeasibleSolution, solve_checked
from dispatch.solver.formats import FormatError, load_instance
from dispatch.solver.model import Problem, Solution, with_fleet_minimised


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lastmile solve``."""
    parser.add_argument("file", type=Path, help="Solomon VRPTW or Li & Lim PDPTW instance")
    parser.add_argument(
        "--time-limit", type=float, default=10.0, metavar="SECONDS", help="search time"
    )
    parser.add_argument(
        "--backend", choices=sorted(BACKENDS), help="solver backend (default: best for the kind)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--min-vehicles",
        action="store_true",
        help="fewest vehicles first, then distance (hierarchical convention); default: distance",
    )


def answer(problem: Problem, solution: Solution, distance: float) -> dict[str, Any]:
    """The printed JSON object of a checked solution."""
    routes = [[problem.nodes[i].external_id for i in route] for _, route in solution.used_routes()]
    return {
        "instance": problem.name,
        "vehicles": len(routes),
        "distance": distance,
        "routes": routes,
    }


def run(args: argparse.Namespace) -> int:
    """Solve ``args.file``; 0 and JSON on stdout, 2 for a bad file, 1 when nothing feasible."""
    try:
        problem = load_instance(args.file)
    except (OSError, FormatError) as exc:
        print(f"lastmile solve: {exc}", file=sys.stderr)
        return 2
    if args.min_vehicles:
        problem = with_fleet_minimised(problem)
    if args.time_limit <= 0:
        print("lastmile solve: --time-limit must be positive", file=sys.stderr)
        return 2
    try:
        solution, report = solve_checked(problem, args.time_limit, args.seed, args.backend)
    except NoFeasibleSolution as exc:
        print(f"lastmile solve: no feasible solution: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer(problem, solution, report.distance)))
    return 0
