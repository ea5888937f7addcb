"""RouteAck from drivers' apps: the acknowledged version recorded per route.

An ack arrives over the driver-event stream, not as an RPC, so nobody can be answered with an
error: an ack of a route that is not the driver's, or of a version the route never had, is
ignored with a log line. Replays and late acks of older versions change nothing (the
acknowledged version only moves up). The acknowledgement is mirrored in Redis
(:mod:`core.route_plans`) so a reconnecting app is only handed versions it has not acked.
"""

from __future__ import annotations

import logging

from lastmile.driver.v1 import driver_pb2

from core import route_plans
from dispatch.context import DispatchContext
from dispatch.order_store import Row

log = logging.getLogger(__name__)

_RECORD = (
    "UPDATE routes SET acked_version = $3, acked_at = now()"
    " WHERE route_id = $1 AND driver_id = $2 AND version >= $3 AND acked_version < $3"
    " RETURNING acked_version"
)


async def record_ack(ctx: DispatchContext, driver_id: str, ack: driver_pb2.RouteAck) -> bool:
    """Record the acknowledged version; returns whether it moved (see the module doc)."""
    async with ctx.database.pool.acquire() as conn:
        recorded = await conn.fetchval(_RECORD, ack.route_id, driver_id, ack.version)
        if recorded is None:
            row = await conn.fetchrow(
                "SELECT driver_id, version, acked_version FROM routes WHERE route_id = $1",
                ack.route_id,
            )
    if recorded is None:
        _log_ignored(driver_id, ack, None if row is None else dict(row))
        return False
    await route_plans.record_ack(ctx.bus.redis, driver_id, ack.route_id, ack.version)
    return True


def _log_ignored(driver_id: str, ack: driver_pb2.RouteAck, route: Row | None) -> None:
    extra = {"driver": driver_id, "route_id": ack.route_id, "version": ack.version}
    if route is None:
        log.info("route ack ignored: unknown route", extra=extra)
    elif route["driver_id"] != driver_id:
        log.info("route ack ignored: not the driver's route", extra=extra)
    elif ack.version > route["version"] or ack.version == 0:
        log.info("route ack ignored: no such version", extra=extra)
    else:
        log.debug("route ack of a version acknowledged already", extra=extra)
