"""Pushing a route version to its driver: the one way every route change reaches the app.

The version is first mirrored in Redis (:mod:`core.route_plans`: the gateway hands an
unacknowledged version to a reconnecting app in Welcome, tracking checks positions against its
legs), then sent as a RouteUpdate command on the driver's channel. Mirroring first means an
app that acknowledges at once finds its version there.
"""

from __future__ import annotations

import logging

from lastmile.common.v1 import route_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core import route_plans
from core.driver_commands import send_command
from dispatch.context import DispatchContext

log = logging.getLogger(__name__)


async def publish(ctx: DispatchContext, route: route_pb2.Route, reason: str) -> None:
    """Mirror ``route`` as the driver's current version and send it as a RouteUpdate (an
    older version than the one mirrored already is not sent: a newer push overtook it)."""
    if not await route_plans.store(ctx.bus.redis, route):
        log.info(
            "older route version not pushed",
            extra={"route_id": route.route_id, "version": route.version, "reason": reason},
        )
        return
    update = driver_pb2.RouteUpdate(route=route, reason=reason)
    await send_command(
        ctx.bus, route.driver_id, driver_service_pb2.ConnectResponse(route_update=update)
    )
