"""Off-route recomputation: a driver left its route's planned geometry for longer than the
threshold (an OffRouteEvent from tracking, ``core.topics.OFF_ROUTE_EVENTS``), so the route is
recomputed from where the driver is and pushed with reason ``off_route``.

Same stops in the same order: only the road from the driver's position through the remaining
stops changes, and the planned arrivals with it. The event names the version whose geometry
the driver left; when the route has moved on since (a newer version was pushed meanwhile, or
the event is a replay or a duplicate from a second tracking process) nothing happens: a newer
version is in place already.
"""

from __future__ import annotations

import logging

from lastmile.tracking.v1 import tracking_pb2

from core.geo import LatLng
from dispatch import route_store, route_versions, routes
from dispatch.context import DispatchContext

log = logging.getLogger(__name__)


async def reroute(ctx: DispatchContext, event: tracking_pb2.OffRouteEvent) -> bool:
    """Recompute and push the route the event is about; returns whether a version was made."""
    extra = {"driver": event.driver_id, "route_id": event.route_id, "version": event.route_version}
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        route = await route_versions.lock_route(conn, event.route_id)
        current = (
            route is not None
            and route["active"]
            and route["driver_id"] == event.driver_id
            and route["version"] == event.route_version
        )
        if route is None or not current:
            log.info("off-route event for a version no longer current", extra=extra)
            return False
        stops = await route_store.fetch_stops(conn, event.route_id)
        completed = [s for s in stops if s.completed_at is not None]
        remaining = [s for s in stops if s.completed_at is None]
        if not remaining:
            log.info("off-route event for a route with no stops left", extra=extra)
            return False
        fallback = LatLng(event.position.lat, event.position.lng)
        position = await routes.live_position(ctx.bus, event.driver_id) or fallback
        await route_versions.rewrite(ctx, conn, route, len(completed), remaining, position)
    log.info("route recomputed off route", extra={**extra, "distance_m": event.distance_m})
    await route_versions.push_current(ctx, [event.route_id], "off_route")
    return True
