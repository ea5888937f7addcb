"""ReoptimizeRoute: insert orders into a route under way.

The route's remaining (not completed) stops, with the first one fixed, go to the pure
:func:`dispatch.solver.reoptimize.reoptimize` together with the new orders' pickup and
drop-off, on an OSRM duration matrix from the driver's live position (the live-state hash of
``core.live_state_keys``; the first remaining stop when the driver has not reported one).
The new stop order is stored as the next version of the route, the inserted orders are
assigned to it, and the driver's app gets a RouteUpdate. Orders that cannot go in without
making the route later come back as rejected and stay pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lastmile.dispatch.v1 import dispatch_service_pb2 as pb

from core.errors import FailedPrecondition, InvalidArgument
from core.geo import LatLng
from core.roads import RoadNetwork
from dispatch import order_store, route_read, route_store, route_versions, routes
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Row
from dispatch.planning import durations
from dispatch.route_store import DROP_OFF, PICKUP, StopRow
from dispatch.solver.reoptimize import NewOrder, Reoptimized, RouteUnderWay, Stop, StopKind
from dispatch.solver.reoptimize import reoptimize as insert_orders

if TYPE_CHECKING:
    from core.db import Conn


def solver_stop(stop: StopRow, index: int, start: dt.datetime, orders: dict[str, Row]) -> Stop:
    """The solver's view of a stored (or new) stop at matrix ``index``."""
    ready, due = routes.window_s(start, stop.window)
    units = int(orders[stop.order_id]["size_units"]) if stop.order_id in orders else 0
    pickup = stop.kind == PICKUP
    return Stop(
        key=stop.stop_id,
        order_id=stop.order_id,
        kind=StopKind.PICKUP if pickup else StopKind.DROPOFF,
        location=index,
        ready=ready,
        due=due,
        service=float(stop.service_time_s),
        load=units if pickup else -units,
    )


def solve(
    roads: RoadNetwork,
    position: LatLng,
    remaining: Sequence[StopRow],
    added: Sequence[StopRow],
    orders: dict[str, Row],
    capacity: int,
) -> Reoptimized:
    """Insert ``added`` (pickup, drop-off pairs in order) into ``remaining`` (blocking)."""
    start = now()
    everything = [*remaining, *added]
    matrix = durations(roads, [position, *(s.location for s in everything)])
    stops = [solver_stop(s, k + 1, start, orders) for k, s in enumerate(everything)]
    picked = {s.order_id for s in remaining if s.kind == PICKUP}
    on_board = sum(-s.load for s in stops[: len(remaining)] if s.order_id not in picked)
    route = RouteUnderWay(0.0, 0, stops[: len(remaining)], capacity, on_board)
    new = [
        NewOrder(stops[i].order_id, (stops[i], stops[i + 1]))
        for i in range(len(remaining), len(stops), 2)
    ]
    return insert_orders(route, new, matrix)


async def load_new_orders(
    conn: Conn, tenant_id: str, order_ids: Sequence[str], on_route: set[str]
) -> dict[str, Row]:
    """The orders to insert: the tenant's, pending, not on the route already."""
    found = {}
    for order_id in dict.fromkeys(order_ids):
        row = await order_store.fetch_order(conn, tenant_id, order_id)
        if order_id in on_route:
            raise FailedPrecondition(f"order {order_id!r} is on the route already")
        if row["status"] != sm.PENDING:
            raise FailedPrecondition(
                f"order {order_id!r} is {sm.name(row['status'])}: only pending orders can be"
                " inserted"
            )
        found[order_id] = row
    return found


async def reoptimize_route_rpc(
    ctx: DispatchContext, request: pb.ReoptimizeRouteRequest
) -> pb.ReoptimizeRouteResponse:
    """ReoptimizeRoute (see the module doc)."""
    tenant_id, actor = routes.actor_of_caller()
    if not request.route_id or not request.order_ids:
        raise InvalidArgument("route_id and order_ids are required")
    routes.time_limit_s(request.time_limit, request.HasField("time_limit"))
    async with ctx.database.pool.acquire() as conn:
        route = await route_store.fetch_route(conn, tenant_id, request.route_id)
        if not route["active"]:
            raise FailedPrecondition(f"route {request.route_id!r} is no longer active")
        stops = await route_store.fetch_stops(conn, route["route_id"])
        new_orders = await load_new_orders(
            conn, tenant_id, request.order_ids, {s.order_id for s in stops}
        )
        orders = await route_store.orders_by_id(conn, [s.order_id for s in stops if s.order_id])
        capacity = await conn.fetchval(
            "SELECT capacity_units FROM drivers WHERE driver_id = $1", route["driver_id"]
        )
        depot = await routes.driver_depot(conn, route["driver_id"])
    orders.update(new_orders)
    completed = [s for s in stops if s.completed_at is not None]
    remaining = [s for s in stops if s.completed_at is None]
    added = [
        routes.stop_row(kind, row) for row in new_orders.values() for kind in (PICKUP, DROP_OFF)
    ]
    position = await routes.live_position(ctx.bus, route["driver_id"])
    position = position or (remaining[0].location if remaining else depot) or added[0].location
    roads = routes.road_network(ctx.settings)
    result = await asyncio.to_thread(
        solve, roads, position, remaining, added, orders, capacity or routes.UNTRACKED_CAPACITY
    )
    by_key = {s.stop_id: s for s in [*remaining, *added]}
    ordered = [by_key[s.key] for s in result.stops]
    road = await asyncio.to_thread(routes.drive, roads, position, ordered)
    ordered = routes.with_arrivals(ordered, road, now())
    inserted = [o for o in new_orders if o not in set(result.rejected)]
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = await route_store.fetch_route(conn, tenant_id, route["route_id"], lock=True)
        if locked["version"] != route["version"] or not locked["active"]:
            raise FailedPrecondition("the route changed while it was re-optimized; try again")
        await route_store.replace_stops(conn, route["route_id"], len(completed), ordered)
        route = await route_store.bump_version(conn, route["route_id"], road)
        await routes.assign_orders(conn, tenant_id, inserted, route, actor)
    ctx.wake_outbox()
    # Legs from where the driver is, as every pushed version (dispatch.route_versions).
    message = await route_versions.current_message(ctx, route["route_id"])
    if message is None:  # retired by a new wave meanwhile: answer with what was stored
        message = await route_read.read_route(ctx, tenant_id, route_id=route["route_id"])
    else:
        await routes.push_route(ctx, message, "reoptimized")
    return pb.ReoptimizeRouteResponse(route=message, rejected_order_ids=result.rejected)
