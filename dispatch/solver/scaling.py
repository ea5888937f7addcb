"""Integer data for the integer solvers, rounded so that integer-feasible means feasible.

Travel and service times round up and due times round down at ``TIME_SCALE``, so a schedule
that fits the integer windows also fits the real ones in full precision (the price is at most
one thousandth of a unit per arc). Arc costs use the objective: the DIMACS truncated
distance is exact at scale 10, a full-precision distance is rounded at ``COST_SCALE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dispatch.solver.model import Objective, Problem

IntMatrix = npt.NDArray[np.int64]

TIME_SCALE = 1000
COST_SCALE = 1000


@dataclass(frozen=True, slots=True)
class IntegerData:
    """Scaled integer matrices, windows and shifts of a problem (indexed like its nodes)."""

    cost: IntMatrix
    duration: IntMatrix
    ready: list[int]
    due: list[int]
    service: list[int]
    shift_start: list[int]
    shift_end: list[int]
    # Per vehicle: (earliest start, latest start, duration) of each break.
    breaks: list[list[tuple[int, int, int]]]
    horizon: int
    vehicle_cost: int
    unserved_cost: int | None


def _horizon(problem: Problem) -> float:
    """A time no feasible route can run past, for windows left open."""
    finite = [n.due for n in problem.nodes if math.isfinite(n.due)]
    finite += [v.shift_end for v in problem.vehicles if math.isfinite(v.shift_end)]
    latest_ready = max([n.ready for n in problem.nodes] + [0.0])
    worst = float(problem.duration.max(axis=1).sum()) + sum(n.service for n in problem.nodes)
    worst += sum(b.duration for v in problem.vehicles for b in v.breaks)
    return max(finite) if finite else latest_ready + worst


def integer_data(problem: Problem) -> IntegerData:
    """Scale ``problem`` to integers (see the module doc for the rounding directions)."""
    horizon = _horizon(problem)

    def down(value: float) -> int:
        return math.floor(min(value, horizon) * TIME_SCALE)

    def up(value: float) -> int:
        return math.ceil(value * TIME_SCALE)

    cost_scale = 10 if problem.objective is Objective.TRUNCATED_DISTANCE else COST_SCALE
    if problem.objective is Objective.TRUNCATED_DISTANCE:
        cost = np.floor(problem.distance * 10.0 + 1e-9).astype(np.int64)
    else:
        cost = np.rint(problem.distance * COST_SCALE).astype(np.int64)
    # No tolerance in either direction: a rounding slip here would be a window violation.
    duration = np.ceil(problem.duration * TIME_SCALE).astype(np.int64)
    return IntegerData(
        cost=cost,
        duration=duration,
        ready=[up(n.ready) for n in problem.nodes],
        due=[down(n.due) for n in problem.nodes],
        service=[up(n.service) for n in problem.nodes],
        shift_start=[up(v.shift_start) for v in problem.vehicles],
        shift_end=[down(v.shift_end) for v in problem.vehicles],
        breaks=[
            [(up(b.earliest), down(b.latest), up(b.duration)) for b in v.breaks]
            for v in problem.vehicles
        ],
        horizon=down(horizon),
        vehicle_cost=round(problem.vehicle_cost * cost_scale),
        unserved_cost=(
            None if problem.unserved_cost is None else round(problem.unserved_cost * cost_scale)
        ),
    )
