"""Driver breaks: the timeline, the placement search, the checker and the OR-Tools model."""

from __future__ import annotations

import numpy as np

from dispatch.solver.backends import default_backend, solve_checked
from dispatch.solver.feasibility import check
from dispatch.solver.model import Break, Node, NodeKind, Problem, Solution, Vehicle
from dispatch.solver.timeline import place_breaks, walk


def _line(breaks: tuple[Break, ...], windows: list[tuple[float, float]]) -> Problem:
    """A depot at 0 and stops 1..n on a line, 600 s apart, 60 s service each."""
    n = len(windows)
    nodes = [Node(0, NodeKind.DEPOT, 0, 0.0, 100_000.0)]
    nodes += [Node(k + 1, NodeKind.DROP, 1, a, b, 60.0) for k, (a, b) in enumerate(windows)]
    coords = np.arange(n + 1, dtype=float)
    duration = np.abs(coords[:, None] - coords[None, :]) * 600.0
    vehicle = Vehicle(0, 0, 10, 0.0, 100_000.0, breaks)
    return Problem("line", nodes, [vehicle], duration, duration)


def test_walk_takes_a_placed_break_at_departure_and_delays_what_follows() -> None:
    problem = _line((Break(1000.0, 2000.0, 1800.0),), [(0.0, 10_000.0)] * 3)
    plain = walk(problem, 0, [1, 2, 3], [None])
    with_break = walk(problem, 0, [1, 2, 3], [1])
    # Leaves stop 1 at 660 s, waits for the window (1000 s), rests 1800 s, drives 600 s.
    assert with_break.break_starts == [1000.0]
    assert with_break.service_starts[1] == 1000.0 + 1800.0 + 600.0
    assert with_break.service_starts[0] == plain.service_starts[0]
    assert not with_break.violations


def test_walk_reports_a_break_that_starts_too_late_or_is_never_taken() -> None:
    problem = _line((Break(0.0, 500.0, 900.0),), [(0.0, 10_000.0)] * 3)
    late = walk(problem, 0, [1, 2, 3], [2])  # leaves stop 2 at 1320 s > 500 s
    assert any("break 0 would start" in v for v in late.violations)
    skipped = walk(problem, 0, [1, 2, 3], [None])  # back at 3960 s > 500 s
    assert any("not taken" in v for v in skipped.violations)


def test_a_break_after_the_route_costs_nothing_when_the_route_ends_first() -> None:
    problem = _line((Break(20_000.0, 30_000.0, 3600.0),), [(0.0, 10_000.0)] * 2)
    assert place_breaks(problem, 0, [1, 2]) == [None]
    assert check(problem, Solution([[1, 2]])).feasible


def test_place_breaks_finds_the_position_that_keeps_a_tight_window() -> None:
    # Stop 3 must start by 2500 s: the hour break has to wait until after it.
    windows = [(0.0, 10_000.0), (0.0, 10_000.0), (0.0, 2500.0), (0.0, 20_000.0)]
    problem = _line((Break(1000.0, 4000.0, 3600.0),), windows)
    placement = place_breaks(problem, 0, [1, 2, 3, 4])
    # Before stop 3 breaks its window; after the route (back at 5040 s) is past 4000 s.
    assert placement is not None and placement[0] in (3, 4)
    assert not walk(problem, 0, [1, 2, 3, 4], placement).violations


def test_checker_rejects_a_route_whose_breaks_cannot_fit() -> None:
    # The break must start by 1000 s and lasts an hour; stop 2 must be served by 2000 s.
    problem = _line((Break(0.0, 1000.0, 3600.0),), [(0.0, 10_000.0), (0.0, 2000.0)])
    report = check(problem, Solution([[1, 2]]))
    assert not report.feasible
    assert any("breaks do not fit" in v for v in report.violations)


def test_ortools_plans_around_a_break_and_the_plan_passes_the_checker() -> None:
    windows = [(0.0, 3000.0), (0.0, 3000.0), (4000.0, 9000.0), (4000.0, 9000.0)]
    problem = _line((Break(1500.0, 3500.0, 1800.0),), windows)
    assert default_backend(problem) == "ortools"
    solution, report = solve_checked(problem, 2.0)
    assert report.feasible
    placement = place_breaks(problem, 0, solution.routes[0])
    assert placement is not None and placement[0] is not None
    timeline = walk(problem, 0, solution.routes[0], placement)
    start = timeline.break_starts[0]
    assert start is not None and 1500.0 <= start <= 3500.0


def test_a_break_that_leaves_no_time_makes_the_solver_leave_a_stop_out() -> None:
    # Two-hour break starting by 600 s; the last stop closes at 3000 s: it cannot be served.
    windows = [(0.0, 20_000.0), (0.0, 3000.0)]
    problem = _line((Break(0.0, 600.0, 7200.0),), windows)
    optional = Problem(
        problem.name,
        problem.nodes,
        problem.vehicles,
        problem.distance,
        problem.duration,
        unserved_cost=100_000.0,
    )
    # Half a second: OR-Tools took 1-2 s to its first solution here until waiting had a cost
    # (the LP cumul optimizer now places the break; before, its finalizer tried every start).
    solution, report = solve_checked(optional, 0.5)
    assert report.feasible
    served = {i for route in solution.routes for i in route}
    assert 2 not in served and 1 in served
