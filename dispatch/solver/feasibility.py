"""The feasibility checker every solution passes before anyone sees it.

Full double precision on the problem's real matrices: capacity at every point of the route,
time windows (service starts no later than ``due``; arriving early waits), the return to the
end depot by its due time and the shift end, the driver's breaks (see
:mod:`dispatch.solver.timeline`), each pickup before its delivery on the same route, and every
customer served exactly once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from dispatch.solver.model import NodeKind, Problem, Solution
from dispatch.solver.timeline import place_breaks, walk


@dataclass(frozen=True, slots=True)
class Report:
    """What the checker found: violations (empty when feasible) and the solution's totals."""

    violations: list[str]
    distance: float
    cost: float
    vehicles: int

    @property
    def feasible(self) -> bool:
        """True when no constraint is violated."""
        return not self.violations


def _load_violations(problem: Problem, vehicle_index: int, route: list[int]) -> list[str]:
    """Capacity and precedence violations of one vehicle's route."""
    vehicle = problem.vehicles[vehicle_index]
    nodes = problem.nodes
    found: list[str] = []
    load = sum(nodes[i].amount for i in route if nodes[i].kind is NodeKind.DROP)
    if load > vehicle.capacity:
        found.append(f"vehicle {vehicle_index}: load {load} at start > {vehicle.capacity}")
    position: dict[int, int] = {}
    for k, i in enumerate(route):
        node = nodes[i]
        if node.kind is NodeKind.DEPOT:
            found.append(f"vehicle {vehicle_index}: depot node {i} inside the route")
            continue
        load += -node.amount if node.kind in (NodeKind.DROP, NodeKind.DELIVERY) else node.amount
        if load > vehicle.capacity or load < 0:
            found.append(f"vehicle {vehicle_index}: load {load} after node {node.external_id}")
        position[i] = k
    for i, k in position.items():
        sibling = nodes[i].sibling
        if nodes[i].kind is NodeKind.PICKUP and sibling is not None:
            if sibling not in position:  # also catches a pickup whose delivery was dropped
                found.append(f"node {nodes[i].external_id}: its delivery is on another route")
            elif position[sibling] < k:
                found.append(f"node {nodes[i].external_id}: delivered before picked up")
    return found


def _time_violations(problem: Problem, vehicle_index: int, route: list[int]) -> list[str]:
    """Window, shift and break violations (breaks placed by :func:`place_breaks`)."""
    placement = place_breaks(problem, vehicle_index, route)
    if placement is None:
        timeline = walk(
            problem, vehicle_index, route, [None] * len(problem.vehicles[vehicle_index].breaks)
        )
        return [f"vehicle {vehicle_index}: its breaks do not fit", *timeline.violations]
    return walk(problem, vehicle_index, route, placement).violations


def _route_violations(problem: Problem, vehicle_index: int, route: list[int]) -> list[str]:
    """Every violation of one vehicle's route."""
    return _load_violations(problem, vehicle_index, route) + _time_violations(
        problem, vehicle_index, route
    )


def check(problem: Problem, solution: Solution) -> Report:
    """Check ``solution`` against ``problem`` and total its distance and objective cost."""
    violations: list[str] = []
    if len(solution.routes) > len(problem.vehicles):
        violations.append(f"{len(solution.routes)} routes for {len(problem.vehicles)} vehicles")
    seen: dict[int, int] = {}
    for route in solution.routes:
        for i in route:
            seen[i] = seen.get(i, 0) + 1
    optional = problem.unserved_cost is not None
    for i in problem.customers:
        if seen.get(i, 0) > 1 or (seen.get(i, 0) == 0 and not optional):
            violations.append(f"node {problem.nodes[i].external_id} served {seen.get(i, 0)} times")
    unknown = set(seen) - set(range(len(problem.nodes)))
    if unknown:
        violations.append(f"unknown node indices {sorted(unknown)}")
        return Report(violations, float("nan"), float("nan"), 0)
    cost_matrix = problem.arc_cost()
    distance = cost = 0.0
    for v, route in solution.used_routes():
        if v >= len(problem.vehicles):
            continue
        violations.extend(_route_violations(problem, v, route))
        vehicle = problem.vehicles[v]
        path = [vehicle.start, *route, vehicle.end]
        distance += sum(float(problem.distance[a, b]) for a, b in itertools.pairwise(path))
        cost += sum(float(cost_matrix[a, b]) for a, b in itertools.pairwise(path))
    return Report(violations, distance, cost, len(solution.used_routes()))
