"""Commands to connected driver apps, and the tracking frequency each driver status calls for.

Any service pushes a command with :func:`send_command`: it is published on the driver's
commands channel, and whichever gateway process holds that driver's ``Connect`` stream
forwards it down the stream. A driver that is not connected misses it (commands are live
fan-out, not a queue); what a reconnecting app must know comes in ``Welcome``.
"""

from __future__ import annotations

from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core import topics
from core.bus import Bus

#: Statuses in which a driver is on a delivery: frequent fixes.
ACTIVE_STATUSES = frozenset(
    {
        common_pb2.DRIVER_STATUS_TO_PICKUP,
        common_pb2.DRIVER_STATUS_AT_PICKUP,
        common_pb2.DRIVER_STATUS_DELIVERING,
    }
)


def offer_key(offer_id: str) -> str:
    """An open offer's JSON record in Redis (``driver_id``, ``tenant_id``, ``order_ids``,
    ``expires_ms``): written by dispatch when it offers, read by the gateway to refuse answers
    from drivers the offer was not made to; deleted once the offer is resolved."""
    return f"lastmile:instant:offer:{offer_id}"


async def send_command(
    bus: Bus, driver_id: str, command: driver_service_pb2.ConnectResponse
) -> None:
    """Push ``command`` to the driver's app, through whichever gateway holds its stream."""
    await bus.publish(topics.driver_commands_channel(driver_id), command.SerializeToString())


def mode_for_status(status: int) -> int:
    """ACTIVE while on a delivery (to pickup, at pickup, delivering), PASSIVE otherwise."""
    if status in ACTIVE_STATUSES:
        return driver_pb2.TRACKING_MODE_ACTIVE
    return driver_pb2.TRACKING_MODE_PASSIVE


def tracking_mode_key(driver_id: str) -> str:
    """Redis key of the driver's current tracking mode (read by the gateway for Welcome)."""
    return f"lastmile:driver:{driver_id}:tracking-mode"


async def send_tracking_config(bus: Bus, driver_id: str, mode: int) -> bool:
    """Switch the driver's app to ``mode`` (ACTIVE or PASSIVE) if it is not in it already.

    The command names the mode only: the gateway holding the stream fills in the intervals of
    the driver's tenant (core.tracking_intervals). The mode is remembered in Redis so that a
    reconnecting app gets it in Welcome; returns whether it changed (and a command was pushed).
    """
    previous = await bus.redis.getset(tracking_mode_key(driver_id), str(mode))
    if previous is not None and int(previous) == mode:
        return False
    command = driver_service_pb2.ConnectResponse(
        tracking_config=driver_pb2.TrackingConfig(mode=mode)  # type: ignore[arg-type]
    )
    await send_command(bus, driver_id, command)
    return True
