"""Geofence checks on every processed batch of positions (a processor PositionObserver).

For each driver in a batch: the fences that apply to it (its own and the everyone-fences) near
its fixes, plus those it is inside of, are stepped through :mod:`tracking.geofence_engine` fix
by fix, oldest first. The per-driver state lives in Redis (one hash per driver, field = fence
id), so several processor processes and restarts continue where they stopped.

A fence watches only drivers of its own tenant (the update's tenant, from the driver's token).
Events are appended to ``core.topics.GEOFENCE_EVENTS`` (field ``data``: a serialized
lastmile.tracking.v1.GeofenceEvent, its cursor the stream entry id; field ``tenant``: the
fence's tenant, so watchers see their own tenant's events only) before the new state is
written: a crash in between repeats an event rather than losing it. Dispatch consumes that
stream to drive order status: ENTER of a PICKUP fence means "arrived at pickup", ENTER of a
NEARBY or DROP_OFF fence means "driver nearby".

Fences are cached; the cache is reloaded when the version counter of
:mod:`tracking.geofences` moves (checked once per batch) or after ``geofence_cache_ttl_s``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lastmile.tracking.v1 import tracking_pb2

from core import topics
from core.bus import Bus, as_text
from core.geo import M_PER_DEG_LAT
from core.live_state_keys import geofence_state_key
from core.settings import Settings
from tracking.geofence_engine import Inside, margins, step
from tracking.geofences import VERSION_KEY, Fence, GeofenceStore
from tracking.positions import Fix, PositionUpdate

log = logging.getLogger(__name__)


@dataclass
class _Cache:
    version: int = -1
    loaded_at: float = -math.inf
    everyone: list[Fence] = field(default_factory=list)
    by_driver: dict[str, list[Fence]] = field(default_factory=dict)
    by_id: dict[str, Fence] = field(default_factory=dict)


class GeofenceObserver:
    """Turns driver positions into geofence events; see the module docstring."""

    def __init__(self, store: GeofenceStore, bus: Bus, settings: Settings) -> None:
        self._store = store
        self._bus = bus
        self._settings = settings
        self._cache = _Cache()

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        """Check every driver of the batch against its fences and publish transitions."""
        if not updates:
            return
        await self._refresh()
        redis = self._bus.redis
        pipe = redis.pipeline(transaction=False)
        for update in updates:
            pipe.hgetall(geofence_state_key(update.driver_id))
        stored = await pipe.execute()
        events: list[tuple[str, tracking_pb2.GeofenceEvent]] = []
        writes: list[tuple[str, dict[Any, Any], list[str]]] = []
        for update, raw in zip(updates, stored, strict=True):
            states = {as_text(k): Inside.decode(as_text(v)) for k, v in raw.items()}
            new_states, found = self._driver(update, states)
            events += found
            changed: dict[Any, Any] = {
                k: v.encode() for k, v in new_states.items() if states.get(k) != v
            }
            gone = [k for k in states if k not in new_states]
            if changed or gone:
                writes.append((update.driver_id, changed, gone))
        for tenant_id, event in events:
            event.cursor = await self._bus.append(
                topics.GEOFENCE_EVENTS,
                {"data": event.SerializeToString(), "tenant": tenant_id},
                maxlen=self._settings.geofence_events_maxlen,
            )
        if writes:
            pipe = redis.pipeline(transaction=False)
            for driver_id, changed, gone in writes:
                key = geofence_state_key(driver_id)
                if changed:
                    pipe.hset(key, mapping=changed)
                if gone:
                    pipe.hdel(key, *gone)
            await pipe.execute()

    def _driver(
        self, update: PositionUpdate, states: dict[str, Inside | None]
    ) -> tuple[dict[str, Inside], list[tuple[str, tracking_pb2.GeofenceEvent]]]:
        """New inside-states (fences not listed: outside) and the events (with their fence's
        tenant) of one driver."""
        fixes = update.fixes or (
            Fix(update.driver_id, update.at, update.position, 0.0, -1.0, -1.0, update.at),
        )
        current = {k: v for k, v in states.items() if v is not None and k in self._cache.by_id}
        fences = {f.geofence_id: f for f in self._near(update, fixes)}
        fences.update((k, self._cache.by_id[k]) for k in current)
        events: list[tuple[str, tracking_pb2.GeofenceEvent]] = []
        for fix in fixes:
            at_ms = int(fix.at.timestamp() * 1000)
            for fence in fences.values():
                bounds = margins(
                    fix.accuracy_m,
                    self._settings.geofence_enter_margin_m,
                    self._settings.geofence_exit_margin_m,
                    fence.circle.radius_m if fence.circle is not None else None,
                )
                before = current.get(fence.geofence_id)
                after, kinds = step(
                    before,
                    fence.signed_distance_m(fix.position),
                    at_ms,
                    bounds,
                    fence.min_dwell_s * 1000,
                )
                if after is None:
                    current.pop(fence.geofence_id, None)
                else:
                    current[fence.geofence_id] = after
                events += [
                    (fence.tenant_id, _event(fence, update.driver_id, fix, kind)) for kind in kinds
                ]
        return current, events

    def _near(self, update: PositionUpdate, fixes: Sequence[Fix]) -> list[Fence]:
        """Fences watching this driver whose box (grown by the exit margin) holds a fix."""
        pad_lat = self._settings.geofence_exit_margin_m / M_PER_DEG_LAT
        found = []
        driver_id = update.driver_id
        for fence in (*self._cache.everyone, *self._cache.by_driver.get(driver_id, ())):
            if not fence.applies_to(driver_id, update.tenant_id):
                continue
            b = fence.bounds
            pad_lng = pad_lat / max(math.cos(math.radians(b.center.lat)), 1e-6)
            if any(
                b.south - pad_lat <= f.position.lat <= b.north + pad_lat
                and b.west - pad_lng <= f.position.lng <= b.east + pad_lng
                for f in fixes
            ):
                found.append(fence)
        return found

    async def _refresh(self) -> None:
        """Reload fences when they changed (version counter) or the cache is too old."""
        version = int(await self._bus.redis.get(VERSION_KEY) or 0)
        age = time.monotonic() - self._cache.loaded_at
        if version == self._cache.version and age < self._settings.geofence_cache_ttl_s:
            return
        loaded_version, fences = await self._store.load_all()
        cache = _Cache(version=loaded_version, loaded_at=time.monotonic())
        for fence in fences:
            cache.by_id[fence.geofence_id] = fence
            if not fence.driver_ids:
                cache.everyone.append(fence)
            for driver_id in fence.driver_ids:
                cache.by_driver.setdefault(driver_id, []).append(fence)
        self._cache = cache
        log.info("geofences loaded", extra={"count": len(fences), "version": loaded_version})


def _event(fence: Fence, driver_id: str, fix: Fix, kind: int) -> tracking_pb2.GeofenceEvent:
    event = tracking_pb2.GeofenceEvent(
        geofence_id=fence.geofence_id,
        driver_id=driver_id,
        kind=kind,  # type: ignore[arg-type]
        order_id=fence.order_id,
    )
    event.at.FromDatetime(fix.at)
    event.position.lat, event.position.lng = fix.position.lat, fix.position.lng
    return event
