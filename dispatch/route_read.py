"""Reading a route: GetRoute, and the message every caller shows.

An active route is read as its driver gets it (:func:`dispatch.route_versions.current_message`:
legs from the driver's position through the remaining stops); a retired one with legs from the
driver's depot (or its first stop) computed on read.
"""

from __future__ import annotations

import asyncio

from lastmile.common.v1 import route_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as pb

from core.auth import Role, require
from core.errors import InvalidArgument
from dispatch import route_store, route_versions
from dispatch.context import DispatchContext
from dispatch.routes import drive, driver_depot, road_network


async def read_route(
    ctx: DispatchContext, tenant_id: str, route_id: str = "", driver_id: str = ""
) -> route_pb2.Route:
    """The stored route as a message: an active one as the driver gets it (legs from the
    driver's position through the remaining stops), a retired one with legs from the
    driver's depot (or the first stop) computed on read."""
    async with ctx.database.pool.acquire() as conn:
        route = await route_store.fetch_route(conn, tenant_id, route_id, driver_id)
    if route["active"]:
        current = await route_versions.current_message(ctx, route["route_id"])
        if current is not None:
            return current
    async with ctx.database.pool.acquire() as conn:
        stops = await route_store.fetch_stops(conn, route["route_id"])
        orders = await route_store.orders_by_id(conn, [s.order_id for s in stops if s.order_id])
        depot = await driver_depot(conn, route["driver_id"])
    road = await asyncio.to_thread(drive, road_network(ctx.settings), depot, stops)
    return route_store.route_message(route, stops, orders, road)


async def get_route_rpc(ctx: DispatchContext, request: pb.GetRouteRequest) -> pb.GetRouteResponse:
    """GetRoute: by route id, or the driver's active route; tenant-scoped."""
    tenant_id = require(Role.DISPATCHER, Role.SERVICE).tenant_id
    key = request.WhichOneof("key")
    if key is None or not getattr(request, key):
        raise InvalidArgument("route_id or driver_id is required")
    route = await read_route(ctx, tenant_id, route_id=request.route_id, driver_id=request.driver_id)
    return pb.GetRouteResponse(route=route)
