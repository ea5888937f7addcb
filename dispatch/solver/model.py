"""The routing problem and its solution, independent of any solver backend.

Nodes are indexed 0..n-1 and the matrices are indexed by node, so a depot or a customer that
shares a location with another is simply a row that repeats it. Times and distances are
floats in the caller's units (seconds and metres from OSRM, or the benchmark's unit).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]


class NodeKind(enum.Enum):
    """What happens at a node and how it changes the vehicle's load."""

    DEPOT = "depot"
    DROP = "drop"  # goods loaded at the start depot, unloaded here (plain VRPTW customer)
    PICKUP = "pickup"  # goods loaded here, unloaded at the paired DELIVERY node
    DELIVERY = "delivery"


@dataclass(frozen=True, slots=True)
class Node:
    """A place a vehicle may visit: a depot or a stop with its time window and service time.

    ``external_id`` is the caller's id (the file's numbering, an order id, ...); ``sibling``
    is the node index of the paired PICKUP/DELIVERY, None for depots and drops.
    """

    external_id: int
    kind: NodeKind
    amount: int = 0
    ready: float = 0.0
    due: float = float("inf")
    service: float = 0.0
    sibling: int | None = None


@dataclass(frozen=True, slots=True)
class Break:
    """A break the driver must take: it starts in ``[earliest, latest]`` and lasts ``duration``.

    A break is taken where the driver is when leaving a stop (or its start depot), after
    serving it and before driving on; a break whose window opens after the route is back at
    its end depot is taken off the route and costs the plan nothing.
    """

    earliest: float
    latest: float
    duration: float


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle (or driver shift): where it starts and ends, its capacity, shift window and
    breaks."""

    start: int
    end: int
    capacity: int
    shift_start: float = 0.0
    shift_end: float = float("inf")
    breaks: tuple[Break, ...] = ()


class Objective(enum.Enum):
    """What a solver minimises; feasibility is always judged on the real matrices."""

    DISTANCE = "distance"  # the distance matrix, full precision
    TRUNCATED_DISTANCE = "truncated_distance"  # each arc floor(10 d) / 10 (DIMACS convention)


@dataclass(frozen=True)
class Problem:
    """A capacitated routing problem with time windows and optional pickup-delivery pairs."""

    name: str
    nodes: Sequence[Node]
    vehicles: Sequence[Vehicle]
    distance: FloatMatrix
    duration: FloatMatrix
    objective: Objective = Objective.DISTANCE
    # Objective cost per vehicle used; large (e.g. 10x the longest route) = fewest vehicles
    # first, the hierarchical benchmark convention. 0 leaves the fleet size free.
    vehicle_cost: float = 0.0
    # Objective cost of leaving a stop (or a pair) unserved; None = every stop is required.
    unserved_cost: float | None = None

    @property
    def customers(self) -> list[int]:
        """Indices of every node that must be served (all non-depot nodes)."""
        return [i for i, node in enumerate(self.nodes) if node.kind is not NodeKind.DEPOT]

    @property
    def has_breaks(self) -> bool:
        """True when some vehicle must take a break."""
        return any(vehicle.breaks for vehicle in self.vehicles)

    @property
    def has_pairs(self) -> bool:
        """True when the problem has pickup-delivery pairs (a PDPTW)."""
        return any(node.kind is NodeKind.PICKUP for node in self.nodes)

    def arc_cost(self) -> FloatMatrix:
        """The per-arc cost the objective sums."""
        if self.objective is Objective.TRUNCATED_DISTANCE:
            return np.floor(self.distance * 10.0 + 1e-9) / 10.0
        return self.distance


@dataclass(frozen=True)
class Solution:
    """One route per vehicle (node indices, depots left out; empty when the vehicle is unused)."""

    routes: list[list[int]]
    backend: str = ""
    notes: list[str] = field(default_factory=list)

    def used_routes(self) -> list[tuple[int, list[int]]]:
        """(vehicle index, route) for each vehicle that serves at least one node."""
        return [(v, route) for v, route in enumerate(self.routes) if route]


def with_fleet_minimised(problem: Problem) -> Problem:
    """``problem`` with a vehicle cost above any route plan's length: fewest vehicles first."""
    bound = float(problem.distance.max()) * (len(problem.nodes) + 1)
    return replace(problem, vehicle_cost=bound)


class Solver(Protocol):
    """The one interface every backend implements."""

    name: str

    def solve(self, problem: Problem, time_limit_s: float, seed: int) -> Solution:
        """Best solution found within the time limit; may be infeasible or partial (the
        caller checks it)."""
        ...
