"""Driver events that change live state: status changes and stop events from the apps.

Consumes ``DRIVER_EVENTS`` with its own group (``tracking-status``; dispatch reads the same
stream with its group). A status change sets the live ``status`` and decides the tracking
mode: ACTIVE while on a delivery (to pickup, at pickup, delivering), PASSIVE otherwise, pushed
to the app through ``core.driver_commands`` only when the mode changes. A stop event sets
``current_order_id`` and ``current_stop_id``. Either change is shown on the tenant's fleet
channel at once (a driver who goes off shift sends no further position to carry it).

Every tracking process reads the stream, so two changes of one driver may be applied in
either order: each carries its time (the app's ``at``, else when the gateway appended it) and
one older than the stored change is dropped. Reading, acking, retries and claiming a dead
process's entries are those of every consumer group (``core.stream_consumer``).
"""

from __future__ import annotations

from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.tracking.v1 import fleet_service_pb2
from prometheus_client import Counter

from core import live_state_keys as keys
from core import topics
from core.bus import Bus, StreamEntry
from core.driver_commands import mode_for_status, send_tracking_config
from core.settings import Settings
from core.stream_consumer import GroupConsumer
from tracking.live_state import LiveState, decode_state, tenant_of
from tracking.processor import consumer_name

GROUP = "tracking-status"
RETRY_S = 1.0
STALE = Counter(
    "lastmile_tracking_stale_driver_changes_total",
    "Driver status or stop changes older than the stored one, not applied.",
    ["kind"],
)


class DriverStatusConsumer(GroupConsumer):
    """Applies driver status and stop events to live state (host component)."""

    name = "tracking-driver-status"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(
            bus,
            [topics.DRIVER_EVENTS],
            GROUP,
            consumer_name(),
            block_ms=settings.order_consumer_block_ms,
            claim_idle_ms=settings.order_consumer_claim_idle_ms,
            retry_s=RETRY_S,
        )

    async def handle(self, entry: StreamEntry) -> None:
        """Apply one status change or stop event (other driver events are dispatch's)."""
        live = LiveState(self._bus.redis)
        driver = entry.fields[b"driver"].decode()
        tenant = entry.fields.get(b"tenant", b"").decode()
        event = driver_service_pb2.ConnectRequest.FromString(entry.fields[b"data"])
        kind = event.WhichOneof("event")
        if kind == "status":
            status = int(event.status.status)
            after = await live.change(
                driver,
                tenant,
                keys.FIELD_STATUS_AT,
                _changed_ms(event.status, entry.entry_id),
                {keys.FIELD_STATUS: status},
            )
            if after is not None:
                mode = mode_for_status(status)
                await send_tracking_config(self._bus, driver, mode)
        elif kind == "stop":
            after = await live.change(
                driver,
                tenant,
                keys.FIELD_STOP_AT,
                _changed_ms(event.stop, entry.entry_id),
                {
                    keys.FIELD_CURRENT_ORDER_ID: event.stop.order_id,
                    keys.FIELD_CURRENT_STOP_ID: event.stop.stop_id,
                },
            )
        else:
            return
        if after is None:
            STALE.labels(kind).inc()
        elif after.get(keys.FIELD_POSITION_AT) and tenant_of(after):
            # Drivers without a position are not on the fleet map (WatchFleet's snapshot).
            update = fleet_service_pb2.WatchFleetResponse(drivers=[decode_state(driver, after)])
            await self._bus.publish(
                topics.fleet_channel(tenant_of(after)), update.SerializeToString()
            )


def _changed_ms(change: driver_pb2.StatusChange | driver_pb2.StopEvent, entry_id: str) -> int:
    """When the app says the change happened, else when the gateway appended it (the entry id's
    milliseconds)."""
    if change.HasField("at"):
        return int(change.at.ToMilliseconds())
    return int(entry_id.split("-", 1)[0])
