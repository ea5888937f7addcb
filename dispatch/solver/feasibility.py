"""The feasibility checker every solution passes before anyone sees it.

Full double precision on the problem's real matrices: capacity at every point of the route,
time windows (service starts no later than ``due``; arriving early waits), the return to the
end depot by its due time and the shift end, each pickup before its delivery on the same
route, and every customer served exactly once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from dispatch.solver.model import NodeKind, Problem, Solution

# Absolute slack for float summation order only; far below any real window.
_EPS = 1e-9


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


def _route_violations(problem: Problem, vehicle_index: int, route: list[int]) -> list[str]:
    """Capacity, time-window and precedence violations of one vehicle's route."""
    vehicle = problem.vehicles[vehicle_index]
    nodes = problem.nodes
    found: list[str] = []
    load = sum(nodes[i].amount for i in route if nodes[i].kind is NodeKind.DROP)
    if load > vehicle.capacity:
        found.append(f"vehicle {vehicle_index}: load {load} at start > {vehicle.capacity}")
    start_node = nodes[vehicle.start]
    time = max(vehicle.shift_start, start_node.ready)
    previous = vehicle.start
    position: dict[int, int] = {}
    for k, i in enumerate(route):
        node = nodes[i]
        if node.kind is NodeKind.DEPOT:
            found.append(f"vehicle {vehicle_index}: depot node {i} inside the route")
            continue
        time = max(time + nodes[previous].service + problem.duration[previous, i], node.ready)
        if time > node.due + _EPS:
            found.append(f"vehicle {vehicle_index}: node {node.external_id} at {time} > {node.due}")
        load += -node.amount if node.kind in (NodeKind.DROP, NodeKind.DELIVERY) else node.amount
        if load > vehicle.capacity or load < 0:
            found.append(f"vehicle {vehicle_index}: load {load} after node {node.external_id}")
        position[i] = k
        previous = i
    end_time = time + nodes[previous].service + problem.duration[previous, vehicle.end]
    end_due = min(nodes[vehicle.end].due, vehicle.shift_end)
    if route and end_time > end_due + _EPS:
        found.append(f"vehicle {vehicle_index}: back at {end_time} > {end_due}")
    for i, k in position.items():
        sibling = nodes[i].sibling
        if nodes[i].kind is NodeKind.PICKUP and sibling is not None:
            if sibling not in position:  # also catches a pickup whose delivery was dropped
                found.append(f"node {nodes[i].external_id}: its delivery is on another route")
            elif position[sibling] < k:
                found.append(f"node {nodes[i].external_id}: delivered before picked up")
    return found


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
