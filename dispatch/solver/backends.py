"""The solver backends by name, the default per problem kind, and the checked solve.

Defaults are the winners of ``bench/solver.py`` at 10 s per instance (see
``bench/results/solver.md``). Nothing leaves :func:`solve_checked` without passing the
full-precision feasibility checker; when the chosen backend's answer fails it, the other
backends get a try before giving up.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatch.solver.feasibility import Report, check
from dispatch.solver.model import Problem, Solution, Solver


def _pyvrp() -> Solver:
    # Imported on use: the solver libraries take a while to load and most commands never solve.
    from dispatch.solver.pyvrp_backend import PyVRPSolver

    return PyVRPSolver()


def _ortools() -> Solver:
    from dispatch.solver.ortools_backend import ORToolsSolver

    return ORToolsSolver()


BACKENDS: dict[str, Callable[[], Solver]] = {"pyvrp": _pyvrp, "ortools": _ortools}
DEFAULT_VRPTW = "pyvrp"
DEFAULT_PDPTW = "pyvrp"
# PyVRP has no break model; OR-Tools schedules break intervals in its time dimension.
DEFAULT_WITH_BREAKS = "ortools"


class NoFeasibleSolution(RuntimeError):
    """No backend produced a solution that passes the feasibility checker."""


def default_backend(problem: Problem) -> str:
    """The benchmark winner for this kind of problem (the backend that models breaks when
    drivers must take some)."""
    if problem.has_breaks:
        return DEFAULT_WITH_BREAKS
    return DEFAULT_PDPTW if problem.has_pairs else DEFAULT_VRPTW


def solve_checked(
    problem: Problem, time_limit_s: float, seed: int = 0, backend: str | None = None
) -> tuple[Solution, Report]:
    """Solve with ``backend`` (default: the kind's winner), falling back to the others.

    Each try gets the full time limit, so a fallback at most doubles the wall time. Raises
    NoFeasibleSolution (with every backend's violations) when nothing feasible is found.
    """
    first = backend or default_backend(problem)
    if first not in BACKENDS:
        raise ValueError(f"unknown backend {first!r}; known: {', '.join(sorted(BACKENDS))}")
    failures: list[str] = []
    for name in [first, *(n for n in BACKENDS if n != first)]:
        solution = BACKENDS[name]().solve(problem, time_limit_s, seed)
        report = check(problem, solution)
        if report.feasible:
            return solution, report
        failures.append(f"{name}: {'; '.join((solution.notes + report.violations)[:3])}")
    raise NoFeasibleSolution(" | ".join(failures))
