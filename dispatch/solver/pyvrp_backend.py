"""PyVRP backend: hybrid genetic search / iterated local search, with shipments for pairs.

PyVRP 0.14 models pickup-delivery pairs as shipments (same vehicle, pickup first), so one
backend covers VRPTW, PDPTW and their mix. Vehicles with the same depots, capacity and shift
become one vehicle type; routes map back to the caller's vehicles in order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

import pyvrp
from pyvrp.stop import MaxRuntime

from dispatch.solver.model import NodeKind, Problem, Solution
from dispatch.solver.scaling import IntegerData, integer_data


def _vehicle_groups(problem: Problem, data: IntegerData) -> dict[tuple[int, ...], list[int]]:
    """Vehicle indices grouped by everything PyVRP's vehicle type carries."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for v, vehicle in enumerate(problem.vehicles):
        key = (vehicle.start, vehicle.end, vehicle.capacity, data.shift_start[v], data.shift_end[v])
        groups[key].append(v)
    return groups


class _Build:
    """PyVRP problem data plus the maps back from PyVRP indices to node indices."""

    def __init__(self, problem: Problem) -> None:
        data = integer_data(problem)
        nodes = problem.nodes
        depot_nodes = [i for i, n in enumerate(nodes) if n.kind is NodeKind.DEPOT]
        depot_of = {node: k for k, node in enumerate(depot_nodes)}
        self.client_nodes = [i for i, n in enumerate(nodes) if n.kind is NodeKind.DROP]
        self.shipment_nodes = [
            (i, n.sibling)
            for i, n in enumerate(nodes)
            if n.kind is NodeKind.PICKUP and n.sibling is not None
        ]
        groups = _vehicle_groups(problem, data)
        self.type_vehicles = list(groups.values())
        vehicle_types = [
            pyvrp.VehicleType(
                num_available=len(members),
                capacity=[key[2]],
                start_depot=depot_of[key[0]],
                end_depot=depot_of[key[1]],
                tw_early=key[3],
                tw_late=key[4],
                fixed_cost=data.vehicle_cost,
            )
            for key, members in groups.items()
        ]
        self.data = pyvrp.ProblemData(
            locations=[pyvrp.Location(0.0, 0.0) for _ in nodes],
            clients=[
                pyvrp.Client(
                    location=i,
                    delivery=[nodes[i].amount],
                    service_duration=data.service[i],
                    tw_early=data.ready[i],
                    tw_late=data.due[i],
                    required=data.unserved_cost is None,
                    prize=data.unserved_cost or 0,
                )
                for i in self.client_nodes
            ],
            depots=[
                pyvrp.Depot(
                    location=i,
                    tw_early=data.ready[i],
                    tw_late=data.due[i],
                    service_duration=data.service[i],
                )
                for i in depot_nodes
            ],
            vehicle_types=vehicle_types,
            # PyVRP's stubs spell the matrix type oddly (ndarray[int]); int64 arrays are right.
            distance_matrices=[cast(Any, data.cost)],
            duration_matrices=[cast(Any, data.duration)],
            shipments=[
                pyvrp.Shipment(
                    pickup_location=p,
                    delivery_location=d,
                    pickup_tw_early=data.ready[p],
                    pickup_tw_late=data.due[p],
                    pickup_service_duration=data.service[p],
                    delivery_tw_early=data.ready[d],
                    delivery_tw_late=data.due[d],
                    delivery_service_duration=data.service[d],
                    amount=[nodes[p].amount],
                    required=data.unserved_cost is None,
                    prize=2 * (data.unserved_cost or 0),  # a pair is two stops
                )
                for p, d in self.shipment_nodes
            ],
        )

    def node_of(self, activity: pyvrp.Activity) -> int | None:
        """The node index an activity visits (None for depots)."""
        if activity.is_client():
            return self.client_nodes[activity.idx]
        if activity.is_shipment():
            pickup, delivery = self.shipment_nodes[activity.idx]
            return pickup if activity.is_pickup() else delivery
        return None

    def decode(self, solution: pyvrp.Solution, vehicle_count: int) -> list[list[int]]:
        """One node list per caller vehicle."""
        routes: list[list[int]] = [[] for _ in range(vehicle_count)]
        free = [list(members) for members in self.type_vehicles]
        for route in solution.routes():
            vehicle = free[route.vehicle_type()].pop(0)
            visits = [self.node_of(s) for s in route.schedule()]
            routes[vehicle] = [n for n in visits if n is not None]
        return routes


class PyVRPSolver:
    """The PyVRP backend (state of the art for VRPTW; shipments for PDPTW)."""

    name = "pyvrp"

    def solve(self, problem: Problem, time_limit_s: float, seed: int) -> Solution:
        """Run PyVRP for ``time_limit_s`` seconds and return its best solution."""
        build = _Build(problem)
        result = pyvrp.solve(
            build.data, MaxRuntime(time_limit_s), seed=seed, collect_stats=False, display=False
        )
        notes = [] if result.best.is_feasible() else ["pyvrp: best solution is infeasible"]
        return Solution(build.decode(result.best, len(problem.vehicles)), self.name, notes)
