"""A route's schedule in full precision: arrivals, waits, service and the driver's breaks.

Time windows are judged on service start (arriving early waits). Breaks follow
:class:`dispatch.solver.model.Break`: a break placed at position ``k`` is taken when leaving
the ``k``-th point of the route (0 = the start depot, ``k`` = after serving ``route[k-1]``),
starting at ``max(departure, earliest)`` which must not pass ``latest``; a break placed at
``None`` is taken after the route is back at its end depot, which it must reach by
``latest``. Solvers model breaks their own way; :func:`place_breaks` finds a placement for a
given route so every backend's answer is judged, and shown to drivers, the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from dispatch.solver.model import Problem

# Absolute slack for float summation order only; far below any real window.
EPS = 1e-9

Placement = Sequence[int | None]


@dataclass(frozen=True, slots=True)
class Timeline:
    """The schedule of one route: service start per stop, break starts, the end time."""

    service_starts: list[float]
    break_starts: list[float | None]  # None for a break taken after the route
    end: float
    violations: list[str]


def _departure_breaks(
    problem: Problem, v: int, at: int, departure: float, placement: Placement, found: list[str]
) -> tuple[float, dict[int, float]]:
    """The departure time from position ``at`` after the breaks placed there, and their starts."""
    breaks = problem.vehicles[v].breaks
    starts: dict[int, float] = {}
    for b in sorted(
        (b for b, p in enumerate(placement) if p == at), key=lambda b: breaks[b].earliest
    ):
        brk = breaks[b]
        start = max(departure, brk.earliest)
        if start > brk.latest + EPS:
            found.append(f"vehicle {v}: break {b} would start at {start} > {brk.latest}")
        starts[b] = start
        departure = start + brk.duration
    return departure, starts


def walk(problem: Problem, v: int, route: Sequence[int], placement: Placement = ()) -> Timeline:
    """Drive ``route`` with vehicle ``v`` taking its breaks as placed (see the module doc).

    ``placement`` has one entry per break of the vehicle (or is empty for none); every
    window, shift and break violation is listed in the result.
    """
    vehicle = problem.vehicles[v]
    nodes = problem.nodes
    found: list[str] = []
    if len(placement) != len(vehicle.breaks):
        found.append(f"vehicle {v}: {len(placement)} break placements for {len(vehicle.breaks)}")
        placement = [None] * len(vehicle.breaks)
    time = max(vehicle.shift_start, nodes[vehicle.start].ready)
    previous = vehicle.start
    break_starts: dict[int, float] = {}
    service_starts: list[float] = []
    for k, i in enumerate(route):
        departure, starts = _departure_breaks(
            problem, v, k, time + nodes[previous].service, placement, found
        )
        break_starts.update(starts)
        time = max(departure + problem.duration[previous, i], nodes[i].ready)
        if time > nodes[i].due + EPS:
            found.append(f"vehicle {v}: node {nodes[i].external_id} at {time} > {nodes[i].due}")
        service_starts.append(time)
        previous = i
    departure, starts = _departure_breaks(
        problem, v, len(route), time + nodes[previous].service, placement, found
    )
    break_starts.update(starts)
    end = departure + problem.duration[previous, vehicle.end]
    end_due = min(nodes[vehicle.end].due, vehicle.shift_end)
    if route and end > end_due + EPS:
        found.append(f"vehicle {v}: back at {end} > {end_due}")
    for b, p in enumerate(placement):
        if p is None and end > vehicle.breaks[b].latest + EPS:
            found.append(f"vehicle {v}: break {b} not taken by {vehicle.breaks[b].latest}")
        elif p is not None and not 0 <= p <= len(route):
            found.append(f"vehicle {v}: break {b} placed at {p}, outside the route")
    return Timeline(
        service_starts, [break_starts.get(b) for b in range(len(placement))], end, found
    )


def place_breaks(problem: Problem, v: int, route: Sequence[int]) -> list[int | None] | None:
    """A feasible placement of vehicle ``v``'s breaks on ``route``, or None when none exists.

    Depth-first over positions in break order (earliest window first), each break no earlier
    than the previous one; a prefix is pruned as soon as the route with only the placed breaks
    is infeasible (more breaks only make it later). Positions are tried latest first: a break
    taken late keeps the early windows free, the usual binding ones.
    """
    breaks = problem.vehicles[v].breaks
    order = sorted(range(len(breaks)), key=lambda b: breaks[b].earliest)
    positions: list[int | None] = [None, *range(len(route), -1, -1)]

    def feasible(assigned: dict[int, int | None]) -> bool:
        # Unplaced breaks are left out of the check (they can only make it later).
        sub = [b for b in order if b in assigned]
        vehicle = replace(problem.vehicles[v], breaks=tuple(breaks[b] for b in sub))
        reduced = replace(problem, vehicles=[vehicle])
        return not walk(reduced, 0, route, [assigned[b] for b in sub]).violations

    def search(depth: int, assigned: dict[int, int | None], floor: int) -> bool:
        if depth == len(order):
            return True
        b = order[depth]
        for position in positions:
            if position is not None and position < floor:
                continue
            assigned[b] = position
            nxt = len(route) + 1 if position is None else position
            if feasible(assigned) and search(depth + 1, assigned, nxt):
                return True
            del assigned[b]
        return False

    assigned: dict[int, int | None] = {}
    if not search(0, assigned, 0):
        return None
    return [assigned[b] for b in range(len(breaks))]
