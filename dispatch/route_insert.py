"""Orders joining a driver's route outside a wave: a manual (re)assignment, an accepted
instant offer.

Each order's pickup and drop-off go into the driver's active route by the same cheapest
feasible insertion as ReoptimizeRoute (:func:`dispatch.route_reoptimize.solve`, from the
driver's position, the stop it is driving to kept first). The driver already said yes (or a
dispatcher decided), so an order the insertion would refuse as making the route later is
appended at the end instead of being left out. A driver without an active route gets a new one
(version 1) holding just these orders. Without a road graph the stops are appended. Runs inside
the caller's transaction; the caller sets the orders' ``route_id`` and pushes the version after
the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dispatch import route_reoptimize, route_store, routes
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Row
from dispatch.route_store import DROP_OFF, PICKUP, StopRow
from dispatch.route_versions import drive_from, driver_position, roads_or_none

if TYPE_CHECKING:
    from core.db import Conn


def order_stops(rows: Sequence[Row]) -> list[StopRow]:
    """Pickup then drop-off of each order, in the order given."""
    return [routes.stop_row(kind, row) for row in rows for kind in (PICKUP, DROP_OFF)]


def ordered_stops(
    remaining: Sequence[StopRow], added: Sequence[StopRow], keys: Sequence[str]
) -> list[StopRow]:
    """The stops in the solver's order (``keys``), then the added stops it left out, in pairs."""
    by_key = {s.stop_id: s for s in [*remaining, *added]}
    placed = [by_key[k] for k in keys]
    seen = set(keys)
    return placed + [s for s in added if s.stop_id not in seen]


async def _active_route(conn: Conn, driver_id: str) -> Row | None:
    row = await conn.fetchrow(
        "SELECT * FROM routes WHERE driver_id = $1 AND active FOR UPDATE", driver_id
    )
    return None if row is None else dict(row)


async def place_orders(
    ctx: DispatchContext, conn: Conn, tenant_id: str, driver_id: str, rows: Sequence[Row]
) -> Row:
    """Put the orders' stops on the driver's active route (a new route when it has none) and
    return the route row after the change (see the module doc)."""
    route = await _active_route(conn, driver_id)
    stops = await route_store.fetch_stops(conn, route["route_id"]) if route else []
    on_route = {s.order_id for s in stops if s.completed_at is None}
    added = order_stops([r for r in rows if r["order_id"] not in on_route])
    if route is not None and not added:
        return route
    completed = [s for s in stops if s.completed_at is not None]
    remaining = [s for s in stops if s.completed_at is None]
    orders = await route_store.orders_by_id(conn, [s.order_id for s in remaining if s.order_id])
    orders.update({r["order_id"]: r for r in rows})
    capacity = await conn.fetchval(
        "SELECT capacity_units FROM drivers WHERE driver_id = $1", driver_id
    )
    position = await driver_position(ctx, conn, driver_id) or added[0].location
    roads = roads_or_none(ctx)
    keys: list[str] = [s.stop_id for s in remaining]
    if roads is not None:
        result = await asyncio.to_thread(
            route_reoptimize.solve,
            roads,
            position,
            remaining,
            added,
            orders,
            capacity or routes.UNTRACKED_CAPACITY,
        )
        keys = [s.key for s in result.stops]
    ordered = ordered_stops(remaining, added, keys)
    road = await drive_from(ctx, position, ordered)
    ordered = routes.with_arrivals(ordered, road, now())
    if route is None:
        route = await route_store.insert_route(conn, tenant_id, driver_id, now(), road)
        await route_store.replace_stops(conn, route["route_id"], 0, ordered)
        return route
    await route_store.replace_stops(conn, route["route_id"], len(completed), ordered)
    return await route_store.bump_version(conn, route["route_id"], road)
