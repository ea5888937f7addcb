"""New versions of routes under way: stops rewritten, version bumped, the version pushed.

Every change of a route ends the same way. Inside the change's transaction the route's
remaining (not completed) stops are rewritten, with planned arrivals from where the driver is,
and its version goes up (:func:`rewrite`); after the commit :func:`push_current` sends the
version as stored to the driver (:mod:`dispatch.route_push`), its legs driven from the driver's
live position (its depot, or the first stop, when it has not reported one) through the
remaining stops, turn by turn; legs of completed stops are empty (they lie behind the driver).

Without a road graph (a dispatch process started without one) the changes still happen, the
versions simply carry no legs: a missing graph must not make orders unassignable.

Changes handled here: orders leaving their route (cancelled, rescheduled, reassigned away:
:func:`remove_orders`), orders going back to their origin after a failed attempt
(:func:`return_order`: a RETURN stop) and orders whose instructions changed
(:func:`touch_orders`: same stops, new content). Orders joining a route are in
:mod:`dispatch.route_insert`, re-optimization in :mod:`dispatch.route_reoptimize`, off-route
recomputation in :mod:`dispatch.off_route`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lastmile.common.v1 import route_pb2

from core.geo import LatLng
from core.roads import RoadNetwork
from core.roads import Route as RoadRoute
from dispatch import route_push, route_store, routes
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Row
from dispatch.route_store import StopRow

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)


async def driver_position(ctx: DispatchContext, conn: Conn, driver_id: str) -> LatLng | None:
    """Where the driver is (live state, snapped when it was), else its depot, else None."""
    position = await routes.live_position(ctx.bus, driver_id)
    return position or await routes.driver_depot(conn, driver_id)


def roads_or_none(ctx: DispatchContext) -> RoadNetwork | None:
    """The road network, None (logged) when the graph cannot be opened."""
    try:
        return routes.road_network(ctx.settings)
    except RuntimeError as exc:
        log.warning("no road graph: route versions without legs", extra={"error": str(exc)})
        return None


async def drive_from(
    ctx: DispatchContext, position: LatLng | None, stops: Sequence[StopRow]
) -> RoadRoute | None:
    """The OSRM drive from ``position`` through ``stops`` (off the event loop), None without
    stops, road or graph."""
    roads = roads_or_none(ctx)
    if roads is None:
        return None
    return await asyncio.to_thread(routes.drive, roads, position, stops)


async def lock_route(conn: Conn, route_id: str) -> Row | None:
    """The route row by id, locked for the rest of the transaction."""
    row = await conn.fetchrow("SELECT * FROM routes WHERE route_id = $1 FOR UPDATE", route_id)
    return None if row is None else dict(row)


async def rewrite(
    ctx: DispatchContext,
    conn: Conn,
    route: Row,
    completed: int,
    remaining: Sequence[StopRow],
    position: LatLng | None,
) -> Row:
    """Store ``remaining`` (in this order) after the route's ``completed`` stops, planned from
    ``position`` now, and bump the version (locked route, open transaction)."""
    road = await drive_from(ctx, position, remaining)
    timed = routes.with_arrivals(remaining, road, now())
    await route_store.replace_stops(conn, route["route_id"], completed, timed)
    return await route_store.bump_version(conn, route["route_id"], road)


async def _active_routes_of(conn: Conn, order_ids: Sequence[str]) -> list[str]:
    """Active routes holding a stop not completed yet of any of these orders."""
    rows = await conn.fetch(
        "SELECT DISTINCT s.route_id FROM route_stops s JOIN routes r USING (route_id)"
        " WHERE s.order_id = ANY($1::text[]) AND s.completed_at IS NULL AND r.active"
        " ORDER BY s.route_id",
        list(order_ids),
    )
    return [r["route_id"] for r in rows]


async def remove_orders(ctx: DispatchContext, conn: Conn, order_ids: Sequence[str]) -> list[str]:
    """Take the orders' remaining stops off every active route holding them, each route's
    version bumped; returns those routes (push them after the commit)."""
    gone = set(order_ids)
    changed = []
    for route_id in await _active_routes_of(conn, order_ids):
        route = await lock_route(conn, route_id)
        if route is None or not route["active"]:
            continue
        stops = await route_store.fetch_stops(conn, route_id)
        completed = [s for s in stops if s.completed_at is not None]
        kept = [s for s in stops if s.completed_at is None and s.order_id not in gone]
        position = await driver_position(ctx, conn, route["driver_id"])
        await rewrite(ctx, conn, route, len(completed), kept, position)
        changed.append(route_id)
    return changed


async def return_order(ctx: DispatchContext, conn: Conn, order: Row) -> list[str]:
    """The order goes back to its origin: its remaining stops replaced by a RETURN stop at its
    pickup, at the end of every active route holding it; returns those routes."""
    changed = []
    for route_id in await _active_routes_of(conn, [order["order_id"]]):
        route = await lock_route(conn, route_id)
        if route is None or not route["active"]:
            continue
        stops = await route_store.fetch_stops(conn, route_id)
        completed = [s for s in stops if s.completed_at is not None]
        kept = [s for s in stops if s.completed_at is None and s.order_id != order["order_id"]]
        back = StopRow(
            stop_id=route_store.new_stop_id(),
            kind=route_pb2.STOP_KIND_RETURN,
            order_id=order["order_id"],
            location=LatLng(order["pickup_lat"], order["pickup_lng"]),
            window=(None, None),
            service_time_s=routes.SERVICE_S,
        )
        position = await driver_position(ctx, conn, route["driver_id"])
        await rewrite(ctx, conn, route, len(completed), [*kept, back], position)
        changed.append(route_id)
    return changed


async def after_failure(ctx: DispatchContext, conn: Conn, order: Row) -> list[str]:
    """Routes changed by a failed attempt's outcome: a rescheduled order leaves its route, a
    returned one goes back to its origin; a reattempt changes nothing."""
    if order["status"] == sm.RESCHEDULED:
        return await remove_orders(ctx, conn, [order["order_id"]])
    if order["status"] == sm.RETURNED:
        return await return_order(ctx, conn, order)
    return []


async def touch_orders(conn: Conn, order_ids: Sequence[str]) -> list[str]:
    """A new version (same stops) of every active route with remaining stops of these orders,
    whose content shown to the driver changed; returns those routes."""
    changed = []
    for route_id in await _active_routes_of(conn, order_ids):
        if await lock_route(conn, route_id) is not None:
            await route_store.touch_version(conn, route_id)
            changed.append(route_id)
    return changed


async def current_message(ctx: DispatchContext, route_id: str) -> route_pb2.Route | None:
    """The route as stored now, legs from the driver's position through the remaining stops
    (None when the route does not exist or is no longer active)."""
    async with ctx.database.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM routes WHERE route_id = $1", route_id)
        if row is None or not row["active"]:
            return None
        route = dict(row)
        stops = await route_store.fetch_stops(conn, route_id)
        orders = await route_store.orders_by_id(conn, [s.order_id for s in stops if s.order_id])
        position = await driver_position(ctx, conn, route["driver_id"])
    completed = [s for s in stops if s.completed_at is not None]
    remaining = [s for s in stops if s.completed_at is None]
    road = await drive_from(ctx, position, remaining)
    message = route_store.route_message(route, stops, orders, None)
    message.legs.extend(route_pb2.RouteLeg() for _ in completed)
    message.legs.extend(route_store.leg_messages(road))
    return message


async def push_current(ctx: DispatchContext, route_ids: Sequence[str], reason: str) -> None:
    """Push each route's current version to its driver (after the change committed)."""
    for route_id in dict.fromkeys(route_ids):
        message = await current_message(ctx, route_id)
        if message is None:
            log.info("retired route not pushed", extra={"route_id": route_id, "reason": reason})
            continue
        await route_push.publish(ctx, message, reason)
