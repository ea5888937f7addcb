"""Wave planning: unassigned orders and available drivers in, routes on the road network out.

Orders are grouped by zone (area) and drop-off window bucket; each group is solved as a
capacitated pickup-and-delivery problem with time windows, driver shifts and breaks on the OSRM
duration matrix, drivers used by one group are not offered to the next. Orders without a
pickup point are loaded at the driver's depot. Orders that no driver can serve in their
windows come back as unassigned instead of failing the wave. Times are seconds from the
wave start. The gRPC handlers and the routes tables are in :mod:`dispatch.routes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.geo import LatLng
from core.roads import RoadNetwork
from dispatch.solver.backends import NoFeasibleSolution, solve_checked
from dispatch.solver.model import Break, Node, NodeKind, Problem, Solution, Vehicle
from dispatch.solver.timeline import place_breaks, walk

# A minute of travel is worth less than serving an order: the solver leaves an order out
# only when no driver can take it within the windows and capacities.
UNSERVED_COST_S = 24 * 3600.0
# Matrix value for "no road between these points": large enough that no route uses it.
NO_ROAD_S = 10 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class WaveOrder:
    """An order to plan; ``pickup`` None means the parcel waits at the driver's depot."""

    order_id: str
    area_id: str
    drop_off: LatLng
    drop_off_window: tuple[float, float]
    pickup: LatLng | None = None
    pickup_window: tuple[float, float] = (0.0, float("inf"))
    units: int = 1
    service_s: float = 120.0


@dataclass(frozen=True, slots=True)
class WaveDriver:
    """A driver available for the wave: depot, capacity, shift and the breaks to take."""

    driver_id: str
    depot: LatLng
    capacity: int
    shift: tuple[float, float]
    breaks: tuple[Break, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedStop:
    """One stop of a planned route."""

    order_id: str
    kind: NodeKind
    location: LatLng


@dataclass(frozen=True, slots=True)
class PlannedBreak:
    """A break on a planned route: taken on leaving stop ``after`` (0 = before the first
    stop, at the start), starting at ``start`` seconds from the wave start."""

    after: int
    start: float
    brk: Break


@dataclass(frozen=True, slots=True)
class PlannedRoute:
    """A driver's planned stops in order, and the breaks taken on the way."""

    driver_id: str
    stops: list[PlannedStop]
    breaks: list[PlannedBreak] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WavePlan:
    """The wave's routes and the orders left unassigned."""

    routes: list[PlannedRoute]
    unassigned: list[str]


def group_orders(orders: Sequence[WaveOrder], bucket_s: float) -> list[list[WaveOrder]]:
    """Orders grouped by area and drop-off window start bucket, earliest bucket first."""
    groups: dict[tuple[float, str], list[WaveOrder]] = defaultdict(list)
    for order in orders:
        groups[(order.drop_off_window[0] // bucket_s, order.area_id)].append(order)
    return [groups[key] for key in sorted(groups)]


def _nodes(
    orders: Sequence[WaveOrder], drivers: Sequence[WaveDriver]
) -> tuple[list[Node], list[LatLng], list[str]]:
    """Depot nodes (one per driver) then stop nodes, their points and owning order ids."""
    nodes = [Node(k, NodeKind.DEPOT, 0, d.shift[0], d.shift[1]) for k, d in enumerate(drivers)]
    points = [d.depot for d in drivers]
    owners = ["" for _ in drivers]
    for order in orders:
        if order.pickup is not None:
            at = len(nodes)
            pickup_start, pickup_end = order.pickup_window
            nodes.append(
                Node(
                    at,
                    NodeKind.PICKUP,
                    order.units,
                    pickup_start,
                    pickup_end,
                    order.service_s,
                    at + 1,
                )
            )
            points.append(order.pickup)
            owners.append(order.order_id)
            kind, sibling = NodeKind.DELIVERY, at
        else:
            kind, sibling = NodeKind.DROP, None
        start, end = order.drop_off_window
        nodes.append(Node(len(nodes), kind, order.units, start, end, order.service_s, sibling))
        points.append(order.drop_off)
        owners.append(order.order_id)
    return nodes, points, owners


def durations(roads: RoadNetwork, points: Sequence[LatLng]) -> np.ndarray:
    """The OSRM duration matrix of ``points`` (the solvers' time and cost), pairs with no road
    between them priced out."""
    table = roads.table(points, distances=False)
    return np.array([[NO_ROAD_S if v is None else v for v in row] for row in table.durations_s])


def _plan_group(
    roads: RoadNetwork,
    orders: Sequence[WaveOrder],
    drivers: Sequence[WaveDriver],
    time_limit_s: float,
    seed: int,
) -> tuple[list[PlannedRoute], set[str]]:
    """Routes for one group and the order ids they serve."""
    nodes, points, owners = _nodes(orders, drivers)
    duration = durations(roads, points)
    vehicles = [
        Vehicle(k, k, d.capacity, d.shift[0], d.shift[1], d.breaks) for k, d in enumerate(drivers)
    ]
    # The objective is driving time: that is what a driver's shift and the ETAs are made of.
    problem = Problem("wave", nodes, vehicles, duration, duration, unserved_cost=UNSERVED_COST_S)
    solution, _ = solve_checked(problem, time_limit_s, seed)
    return _routes(problem, solution, drivers, points, owners)


def _breaks_on(problem: Problem, v: int, route: Sequence[int]) -> list[PlannedBreak]:
    """The breaks taken on the route (checked feasible already; those after it left out)."""
    placement = place_breaks(problem, v, route)
    if placement is None:  # solve_checked only returns routes whose breaks fit
        raise NoFeasibleSolution(f"vehicle {v}: breaks do not fit the checked route")
    timeline = walk(problem, v, route, placement)
    planned = []
    for b, (after, start) in enumerate(zip(placement, timeline.break_starts, strict=True)):
        if after is not None and start is not None:
            planned.append(PlannedBreak(after, start, problem.vehicles[v].breaks[b]))
    return sorted(planned, key=lambda p: p.start)


def _routes(
    problem: Problem,
    solution: Solution,
    drivers: Sequence[WaveDriver],
    points: Sequence[LatLng],
    owners: Sequence[str],
) -> tuple[list[PlannedRoute], set[str]]:
    nodes = problem.nodes
    routes = [
        PlannedRoute(
            drivers[v].driver_id,
            [PlannedStop(owners[i], nodes[i].kind, points[i]) for i in route],
            _breaks_on(problem, v, route),
        )
        for v, route in solution.used_routes()
    ]
    served = {stop.order_id for route in routes for stop in route.stops}
    return routes, served


def plan_wave(
    roads: RoadNetwork,
    orders: Sequence[WaveOrder],
    drivers: Sequence[WaveDriver],
    time_limit_s: float,
    bucket_s: float = 3600.0,
    seed: int = 0,
) -> WavePlan:
    """Plan the wave group by group (see the module doc); ``time_limit_s`` is per group."""
    free = list(drivers)
    routes: list[PlannedRoute] = []
    unassigned: list[str] = []
    for group in group_orders(orders, bucket_s):
        if not free:
            unassigned += [o.order_id for o in group]
            continue
        planned, served = _plan_group(roads, group, free, time_limit_s, seed)
        routes += planned
        used = {route.driver_id for route in planned}
        free = [d for d in free if d.driver_id not in used]
        unassigned += [o.order_id for o in group if o.order_id not in served]
    return WavePlan(routes, unassigned)
