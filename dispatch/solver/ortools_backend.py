"""OR-Tools routing backend: cheapest insertion, then guided local search.

Costs and times are the scaled integers of :mod:`dispatch.solver.scaling`. One load dimension
covers drops, pickups and deliveries at once: the start cumul is free (the goods to drop on
this route), drops and deliveries subtract, pickups add, and the end cumul is fixed to zero,
so the cumul is the real load everywhere. Every stop is a disjunction with a huge penalty:
the search can start from a partial plan on tight instances instead of finding nothing, and
a plan that still leaves stops out fails the feasibility check downstream (unless the
problem allows unserved stops, whose penalty is then the problem's ``unserved_cost``).
"""

from __future__ import annotations

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from dispatch.solver.model import NodeKind, Problem, Solution
from dispatch.solver.scaling import IntegerData, integer_data


class _Model:
    """An OR-Tools routing model of a problem, with its index maps."""

    def __init__(self, problem: Problem, data: IntegerData) -> None:
        self.problem = problem
        vehicles = problem.vehicles
        depots = sorted({v.start for v in vehicles} | {v.end for v in vehicles})
        self.nodes = depots + problem.customers  # OR-Tools node k is problem node nodes[k]
        local = {node: k for k, node in enumerate(self.nodes)}
        self.manager = pywrapcp.RoutingIndexManager(
            len(self.nodes),
            len(vehicles),
            [local[v.start] for v in vehicles],
            [local[v.end] for v in vehicles],
        )
        self.routing = pywrapcp.RoutingModel(self.manager)
        self._local = local
        self._arc_cost(data)
        self._time(data)
        self._breaks(data)
        self._load()
        self._pairs()
        self._disjunctions(data)

    def index(self, node: int) -> int:
        """The routing index of a problem customer node."""
        return int(self.manager.NodeToIndex(self._local[node]))

    def _arc_cost(self, data: IntegerData) -> None:
        cost = data.cost[:, self.nodes][self.nodes, :].tolist()
        evaluator = self.routing.RegisterTransitMatrix(cost)
        self.routing.SetArcCostEvaluatorOfAllVehicles(evaluator)
        self.routing.SetFixedCostOfAllVehicles(data.vehicle_cost)

    def _time(self, data: IntegerData) -> None:
        service = [data.service[n] for n in self.nodes]
        travel = data.duration[:, self.nodes][self.nodes, :]
        transit = (travel + [[s] for s in service]).tolist()
        callback = self.routing.RegisterTransitMatrix(transit)
        self.routing.AddDimension(callback, data.horizon, data.horizon, False, "time")
        self.time = self.routing.GetDimensionOrDie("time")
        for node in self.problem.customers:
            self.time.CumulVar(self.index(node)).SetRange(data.ready[node], data.due[node])
        for v, vehicle in enumerate(self.problem.vehicles):
            start = max(data.shift_start[v], data.ready[vehicle.start])
            self.time.CumulVar(self.routing.Start(v)).SetRange(
                start, min(data.shift_end[v], data.due[vehicle.start])
            )
            self.time.CumulVar(self.routing.End(v)).SetRange(
                start, min(data.shift_end[v], data.due[vehicle.end])
            )

    def _breaks(self, data: IntegerData) -> None:
        # A break may not overlap a stop's service (the visit transit); OR-Tools may still
        # place one mid-drive, the checker then finds the placement drivers are shown.
        if not any(data.breaks):
            return
        solver = self.routing.solver()
        visits = [0] * self.routing.Size()
        for index in range(self.routing.Size()):
            visits[index] = data.service[self.nodes[self.manager.IndexToNode(index)]]
        for v, breaks in enumerate(data.breaks):
            intervals = [
                solver.FixedDurationIntervalVar(earliest, latest, duration, False, f"break {v}.{b}")
                for b, (earliest, latest, duration) in enumerate(breaks)
            ]
            if intervals:
                self.time.SetBreakIntervalsOfVehicle(intervals, v, visits)
        # A cost on waiting makes OR-Tools place times and breaks with its LP cumul optimizer.
        # Without one its finalizer tries break starts one millisecond at a time: a two-stop
        # plan took 1-2 s (600,000 failures) to find its first solution. Benchmark instances
        # have no breaks, so their objective is untouched; a plan with breaks weighs a second
        # of waiting like a metre of driving.
        self.time.SetSlackCostCoefficientForAllVehicles(1)

    def _load(self) -> None:
        change = []
        for node in self.nodes:
            n = self.problem.nodes[node]
            change.append(n.amount if n.kind is NodeKind.PICKUP else -n.amount)
        callback = self.routing.RegisterUnaryTransitVector(change)
        capacities = [v.capacity for v in self.problem.vehicles]
        self.routing.AddDimensionWithVehicleCapacity(callback, 0, capacities, False, "load")
        load = self.routing.GetDimensionOrDie("load")
        for v in range(len(self.problem.vehicles)):
            load.CumulVar(self.routing.End(v)).SetRange(0, 0)

    def _pairs(self) -> None:
        solver = self.routing.solver()
        for node in self.problem.customers:
            n = self.problem.nodes[node]
            if n.kind is not NodeKind.PICKUP or n.sibling is None:
                continue
            pickup, delivery = self.index(node), self.index(n.sibling)
            self.routing.AddPickupAndDelivery(pickup, delivery)
            solver.Add(self.routing.VehicleVar(pickup) == self.routing.VehicleVar(delivery))
            solver.Add(self.time.CumulVar(pickup) <= self.time.CumulVar(delivery))

    def _disjunctions(self, data: IntegerData) -> None:
        penalty = (int(data.cost.max() + 1) * len(self.nodes) + data.vehicle_cost) * 4
        if data.unserved_cost is not None:
            penalty = data.unserved_cost
        for node in self.problem.customers:
            self.routing.AddDisjunction([self.index(node)], penalty)

    def routes(self, assignment: pywrapcp.Assignment) -> list[list[int]]:
        """Problem node indices per vehicle, depots left out."""
        routes: list[list[int]] = []
        for v in range(len(self.problem.vehicles)):
            route: list[int] = []
            index = assignment.Value(self.routing.NextVar(self.routing.Start(v)))
            while not self.routing.IsEnd(index):
                route.append(self.nodes[self.manager.IndexToNode(index)])
                index = assignment.Value(self.routing.NextVar(index))
            routes.append(route)
        return routes


def _parameters(problem: Problem, time_limit_s: float) -> pywrapcp.RoutingSearchParameters:
    params = pywrapcp.DefaultRoutingSearchParameters()
    strategy = routing_enums_pb2.FirstSolutionStrategy
    params.first_solution_strategy = strategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    params.time_limit.FromMilliseconds(max(1, int(time_limit_s * 1000)))
    return params


class ORToolsSolver:
    """The OR-Tools routing backend (kept in the stack; deterministic, ``seed`` unused)."""

    name = "ortools"

    def solve(self, problem: Problem, time_limit_s: float, seed: int) -> Solution:
        """Run OR-Tools routing within ``time_limit_s`` seconds."""
        model = _Model(problem, integer_data(problem))
        assignment = model.routing.SolveWithParameters(_parameters(problem, time_limit_s))
        if assignment is None:
            return Solution([[] for _ in problem.vehicles], self.name, ["ortools: no solution"])
        return Solution(model.routes(assignment), self.name)
