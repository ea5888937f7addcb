"""Live state of every driver in Redis (keys and fields: ``core.live_state_keys``).

* ``lastmile:drivers:geo``: member = driver id, position = latest raw fix (for search).
* ``lastmile:driver:{id}`` hash fields (all strings):
  ``lat``, ``lng``, ``heading``, ``speed``, ``accuracy`` (the latest fix),
  ``position_at`` (its capture time, epoch milliseconds), ``snapped_lat``, ``snapped_lng``
  (road-snapped, empty when not snapped), ``status`` (lastmile.common.v1.DriverStatus number),
  ``status_at``, ``current_order_id``, ``current_stop_id``, ``stop_at``, ``name``, ``tenant``
  (of the driver's token).

Positions, statuses and stops only move forward in time: a fix older than the stored one (a
replay, a late batch), or a status or stop change older than the stored one, does not
overwrite it. All drivers of a batch are written in one round trip, a script call per
``DRIVERS_PER_CALL`` drivers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.bus import as_text
from core.geo import LatLng
from core.live_state_keys import DRIVERS_GEO, FIELD_STATUS_AT, FIELD_TENANT, driver_key
from core.redis_scripts import Script, execute, per_call
from tracking.positions import Fix

# The key names are the contract with the readers (fleet search, geofences): core.live_state_keys.
GEO_KEY = DRIVERS_GEO
state_key = driver_key


# KEYS[1] geo, KEYS[2..] the drivers' hashes; ARGV: per driver, in KEYS order, 11 values: id,
# at_ms, lat, lng, heading, speed, accuracy, slat, slng, default status, tenant ('' keeps the
# stored one). Returns per driver {0} when the stored position is as new or newer, else
# {1, status, current_order_id, current_stop_id, name, status_at}.
_ADVANCE = Script("""
local out = {}
for i = 2, #KEYS do
  local key, a = KEYS[i], (i - 2) * 11
  local stored = tonumber(redis.call('HGET', key, 'position_at') or '-1')
  if tonumber(ARGV[a + 2]) <= stored then
    out[#out + 1] = {0}
  else
    redis.call('HSET', key, 'position_at', ARGV[a + 2], 'lat', ARGV[a + 3], 'lng', ARGV[a + 4],
      'heading', ARGV[a + 5], 'speed', ARGV[a + 6], 'accuracy', ARGV[a + 7],
      'snapped_lat', ARGV[a + 8], 'snapped_lng', ARGV[a + 9])
    if ARGV[a + 11] ~= '' then redis.call('HSET', key, 'tenant', ARGV[a + 11]) end
    redis.call('HSETNX', key, 'status', ARGV[a + 10])
    redis.call('GEOADD', KEYS[1], ARGV[a + 4], ARGV[a + 3], ARGV[a + 1])
    local rest = redis.call('HMGET', key, 'status', 'current_order_id', 'current_stop_id', 'name',
      'status_at')
    out[#out + 1] = {1, rest[1] or '', rest[2] or '', rest[3] or '', rest[4] or '', rest[5] or ''}
  end
end
return out
""")
# KEYS[1] a driver's hash. ARGV: the time field, the change's time (epoch ms), the tenant ('' keeps
# the stored one), then field, value pairs. Sets them and the time unless the stored time is
# newer; returns the whole hash after, or nil when the change was older.
_SET_IF_NEWER = Script("""
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) < stored then return nil end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[3]) end
return redis.call('HGETALL', KEYS[1])
""")
# Drivers per script call (core.redis_scripts.per_call): redis-py spent 27-28 us of CPU a
# driver with a call each, 15-18 us in calls of 200.
DRIVERS_PER_CALL = 100


def _arguments(fix: Fix) -> list[str | int]:
    snapped = fix.snapped
    return [
        fix.driver_id,
        int(fix.at.timestamp() * 1000),
        repr(fix.position.lat),
        repr(fix.position.lng),
        repr(fix.heading_deg),
        repr(fix.speed_mps),
        repr(fix.accuracy_m),
        repr(snapped.lat) if snapped else "",
        repr(snapped.lng) if snapped else "",
        common_pb2.DRIVER_STATUS_IDLE,
        fix.tenant_id,
    ]


class LiveState:
    """Writes and reads the live-state keys."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def advance(self, latest: Sequence[Fix]) -> list[tracking_pb2.DriverState | None]:
        """Store each driver's newest fix (one per driver) in one round trip.

        Returns the new DriverState of each driver whose position advanced, None for the
        others (their stored fix was newer).
        """
        if not latest:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for chunk in per_call(latest, DRIVERS_PER_CALL):
            arguments: list[str | int] = []
            for fix in chunk:
                arguments += _arguments(fix)
            _ADVANCE.queue(pipe, [GEO_KEY, *(state_key(fix.driver_id) for fix in chunk)], arguments)
        replies = [reply for call in await execute(pipe, self._redis) for reply in call]
        states: list[tracking_pb2.DriverState | None] = []
        for fix, reply in zip(latest, replies, strict=True):
            if not int(reply[0]):
                states.append(None)
                continue
            status, order, stop, name, status_at = (as_text(v) for v in reply[1:6])
            state = tracking_pb2.DriverState(
                driver_id=fix.driver_id,
                name=name,
                status=int(status or 0),  # type: ignore[arg-type]
                heading_deg=fix.heading_deg,
                speed_mps=fix.speed_mps,
                current_order_id=order,
                current_stop_id=stop,
            )
            shown = snapped_or_raw(fix)
            state.position.lat, state.position.lng = shown.lat, shown.lng
            state.position_at.FromDatetime(fix.at)
            if status_at:
                state.status_since.CopyFrom(_timestamp_ms(int(status_at)))
            states.append(state)
        return states

    async def get(self, driver_id: str) -> tracking_pb2.DriverState | None:
        """The driver's live state, None when it never sent a position or status."""
        raw = await self._redis.hgetall(state_key(driver_id))
        return decode_state(driver_id, raw) if raw else None

    async def get_in_tenant(
        self, driver_id: str, tenant_id: str
    ) -> tracking_pb2.DriverState | None:
        """The driver's live state if the driver belongs to ``tenant_id``, else None (another
        tenant's driver looks exactly like one that never reported)."""
        raw = await self._redis.hgetall(state_key(driver_id))
        if not raw or tenant_of(raw) != tenant_id:
            return None
        return decode_state(driver_id, raw)

    async def change(
        self,
        driver_id: str,
        tenant_id: str,
        time_field: str,
        at_ms: int,
        fields: Mapping[str, str | int],
    ) -> dict[str, str] | None:
        """Set ``fields`` (a status, or the current order and stop) as changed at ``at_ms``,
        with ``time_field`` holding that time, unless the stored change is newer. Returns the
        driver's whole hash after the change, None when it was older and nothing was set."""
        pairs = [v for item in fields.items() for v in item]
        reply: Any = await _SET_IF_NEWER(
            self._redis, [state_key(driver_id)], [time_field, at_ms, tenant_id, *pairs]
        )
        if reply is None:
            return None
        flat = [as_text(v) for v in reply]
        return dict(zip(flat[::2], flat[1::2], strict=True))


def tenant_of(raw: Mapping[Any, Any]) -> str:
    """The ``tenant`` field of a live-state hash (bytes or str keys), '' when absent."""
    value = raw.get(FIELD_TENANT.encode(), raw.get(FIELD_TENANT, b""))
    return as_text(value)


def snapped_or_raw(fix: Fix) -> LatLng:
    """What people are shown: the road position when snapping succeeded."""
    return fix.snapped or fix.position


def decode_state(driver_id: str, raw: Mapping[Any, Any]) -> tracking_pb2.DriverState:
    """A DriverState from the hash (bytes or str keys); shows the snapped position if any."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    state = tracking_pb2.DriverState(
        driver_id=driver_id,
        name=fields.get("name", ""),
        status=int(fields.get("status") or 0),  # type: ignore[arg-type]
        heading_deg=float(fields.get("heading") or -1),
        speed_mps=float(fields.get("speed") or -1),
        current_order_id=fields.get("current_order_id", ""),
        current_stop_id=fields.get("current_stop_id", ""),
    )
    lat = fields.get("snapped_lat") or fields.get("lat")
    lng = fields.get("snapped_lng") or fields.get("lng")
    if lat and lng:
        state.position.lat, state.position.lng = float(lat), float(lng)
    if fields.get("position_at"):
        state.position_at.CopyFrom(_timestamp_ms(int(fields["position_at"])))
    if fields.get(FIELD_STATUS_AT):
        state.status_since.CopyFrom(_timestamp_ms(int(fields[FIELD_STATUS_AT])))
    return state


def _timestamp_ms(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def utc_ms(ms: int) -> dt.datetime:
    """An aware UTC datetime from epoch milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
