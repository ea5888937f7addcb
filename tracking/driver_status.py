"""Driver events that change live state: status changes and stop events from the apps.

Consumes ``DRIVER_EVENTS`` with its own group (``tracking-status``; dispatch reads the same
stream with its group). A status change sets the live ``status`` and decides the tracking
mode: ACTIVE while on a delivery (to pickup, at pickup, delivering), PASSIVE otherwise, pushed
to the app through ``core.driver_commands`` only when the mode changes. A stop event sets
``current_order_id`` and ``current_stop_id``. Dispatch, which knows assignments first, may
set the same status and push the same config with the same helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lastmile.driver.v1 import driver_service_pb2

from core import topics
from core.bus import Bus, StreamEntry
from core.driver_commands import mode_for_status, send_tracking_config
from core.settings import Settings
from tracking.live_state import LiveState
from tracking.processor import consumer_name

log = logging.getLogger(__name__)
GROUP = "tracking-status"
RETRY_S = 1.0


class DriverStatusConsumer:
    """Applies driver status and stop events to live state (host component)."""

    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self._settings = settings
        self._bus = bus
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Create the group and start reading."""
        await self._bus.ensure_group(topics.DRIVER_EVENTS, GROUP, "0")
        self._task = asyncio.create_task(self._run(), name="tracking-driver-status")

    async def stop(self) -> None:
        """Stop after the round in hand."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout=self._settings.shutdown_grace_s + 5)
            self._task = None

    async def _run(self) -> None:
        live = LiveState(self._bus.redis)
        consumer = consumer_name()
        while not self._stopping.is_set():
            try:
                entries = await self._bus.read_group(
                    [topics.DRIVER_EVENTS], GROUP, consumer, count=500, block_ms=1000
                )
                for entry in entries:
                    await self._apply(live, entry)
                if entries:
                    await self._bus.ack(topics.DRIVER_EVENTS, GROUP, [e.entry_id for e in entries])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver status round failed, retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RETRY_S)

    async def _apply(self, live: LiveState, entry: StreamEntry) -> None:
        driver = entry.fields[b"driver"].decode()
        event = driver_service_pb2.ConnectRequest.FromString(entry.fields[b"data"])
        kind = event.WhichOneof("event")
        if kind == "status":
            status = int(event.status.status)
            await live.set_fields(driver, {"status": status})
            await send_tracking_config(self._bus, self._settings, driver, mode_for_status(status))
        elif kind == "stop":
            await live.set_fields(
                driver,
                {"current_order_id": event.stop.order_id, "current_stop_id": event.stop.stop_id},
            )
