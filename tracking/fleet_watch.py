"""WatchFleet: every matching driver first, then coalesced changes from the fleet channel.

The stream subscribes to its tenant's ``core.topics.fleet_channel`` before it reads the
snapshot, so no change falls between the two; the snapshot keeps only drivers whose live state
names the caller's tenant, so a dashboard sees its own fleet and nothing else. Changes are merged per driver (the newest state wins) and sent
at most once per ``fleet_watch_interval_s``: a dashboard gets a steady trickle, not one message
per ping. A driver that leaves the viewport or the status filter (or is reported removed) is
sent once in ``removed_driver_ids``. Messages carry at most ``fleet_message_max_drivers``
drivers, so a large fleet's snapshot comes in several messages (the last one says
``snapshot_complete``) and stays under gRPC's message size limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core import live_state_keys as keys
from core import topics
from core.geo import Bounds, LatLng
from core.inputs import enum_values
from core.settings import Settings
from tracking.area_input import box_from
from tracking.live_state import decode_state, tenant_of

_PIPELINE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """Which drivers a watcher wants."""

    viewport: Bounds | None
    statuses: frozenset[int]

    def matches(self, state: tracking_pb2.DriverState) -> bool:
        """Whether the driver is shown (no position: only without a viewport)."""
        if self.statuses and state.status not in self.statuses:
            return False
        if self.viewport is None:
            return True
        if not state.HasField("position"):
            return False
        return self.viewport.contains(LatLng(state.position.lat, state.position.lng))


def parse_filter(request: fleet_service_pb2.WatchFleetRequest, settings: Settings) -> FleetFilter:
    """The request's filter, checked."""
    viewport = (
        box_from(request.viewport, "viewport", settings) if request.HasField("viewport") else None
    )
    statuses = enum_values(request.statuses, common_pb2.DriverStatus.DESCRIPTOR, "statuses")
    return FleetFilter(viewport, statuses)


@dataclass
class _Pending:
    changed: dict[str, tracking_pb2.DriverState] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)

    def take(self, chunk: int) -> list[fleet_service_pb2.WatchFleetResponse]:
        """The pending changes as messages of at most ``chunk`` drivers each."""
        states = list(self.changed.values())
        chunk = max(1, chunk)
        messages = [
            fleet_service_pb2.WatchFleetResponse(drivers=states[k : k + chunk])
            for k in range(0, len(states), chunk)
        ] or [fleet_service_pb2.WatchFleetResponse()]
        messages[0].removed_driver_ids.extend(sorted(self.removed))
        self.changed.clear()
        self.removed.clear()
        return messages


async def _snapshot(
    client: aioredis.Redis, wanted: FleetFilter, tenant_id: str
) -> list[tracking_pb2.DriverState]:
    if wanted.viewport is None:
        members: Any = await client.zrange(keys.DRIVERS_GEO, 0, -1)
    else:
        width, height = wanted.viewport.size_m()
        center = wanted.viewport.center
        members = await client.geosearch(
            keys.DRIVERS_GEO,
            longitude=center.lng,
            latitude=center.lat,
            width=width * 1.01 + 10,
            height=height * 1.01 + 10,
            unit="m",
        )
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    states = []
    for start in range(0, len(ids), _PIPELINE_CHUNK):
        part = ids[start : start + _PIPELINE_CHUNK]
        pipe = client.pipeline(transaction=False)
        for driver_id in part:
            pipe.hgetall(keys.driver_key(driver_id))
        for driver_id, raw in zip(part, await pipe.execute(), strict=True):
            if raw and tenant_of(raw) == tenant_id:
                state = decode_state(driver_id, raw)
                if wanted.matches(state):
                    states.append(state)
    return states


async def watch_fleet(
    client: aioredis.Redis,
    settings: Settings,
    request: fleet_service_pb2.WatchFleetRequest,
    tenant_id: str,
) -> AsyncGenerator[fleet_service_pb2.WatchFleetResponse, None]:
    """Snapshot, then coalesced changes of ``tenant_id``'s drivers; ends only when the caller
    cancels."""
    wanted = parse_filter(request, settings)
    pubsub = client.pubsub()
    await pubsub.subscribe(topics.fleet_channel(tenant_id))
    try:
        first = await _snapshot(client, wanted, tenant_id)
        shown = {s.driver_id for s in first}
        chunk = max(1, settings.fleet_message_max_drivers)
        for start in range(0, max(1, len(first)), chunk):
            yield fleet_service_pb2.WatchFleetResponse(
                drivers=first[start : start + chunk],
                snapshot_complete=start + chunk >= len(first),
            )
        loop = asyncio.get_running_loop()
        pending = _Pending()
        next_send = loop.time()
        block_s = settings.watch_block_ms / 1000
        while True:
            wait = max(0.0, next_send - loop.time()) if pending else block_s
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is not None and message["type"] == "message":
                update = fleet_service_pb2.WatchFleetResponse.FromString(bytes(message["data"]))
                _merge(update, wanted, shown, pending)
            if pending and loop.time() >= next_send:
                for part in pending.take(settings.fleet_message_max_drivers):
                    yield part
                next_send = loop.time() + settings.fleet_watch_interval_s
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def _merge(
    update: fleet_service_pb2.WatchFleetResponse,
    wanted: FleetFilter,
    shown: set[str],
    pending: _Pending,
) -> None:
    """Fold one published change into what the watcher will be sent next."""
    for state in update.drivers:
        if wanted.matches(state):
            shown.add(state.driver_id)
            pending.removed.discard(state.driver_id)
            pending.changed[state.driver_id] = state
        elif state.driver_id in shown:
            shown.discard(state.driver_id)
            pending.changed.pop(state.driver_id, None)
            pending.removed.add(state.driver_id)
    for driver_id in update.removed_driver_ids:
        if driver_id in shown:
            shown.discard(driver_id)
            pending.changed.pop(driver_id, None)
            pending.removed.add(driver_id)
