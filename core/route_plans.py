"""Each driver's current route version mirrored in Redis, for services that need it without
asking dispatch.

Dispatch owns routes (PostgreSQL ``routes`` and ``route_stops`` stay the record). Every time it
pushes a version to a driver's app it also writes that version here (:func:`store`), and when
the app acknowledges a version it records that here too (:func:`record_ack`). Readers:

* the gateway puts the route in ``Welcome`` when its version is not acknowledged yet
  (:func:`route_if_unacked`): a driver that missed a RouteUpdate while disconnected gets it
  on reconnect;
* tracking checks positions against the legs' geometry (off-route detection): per batch it
  reads the small ``route_id`` and ``version`` fields, and the serialized route only when
  they change.

One hash per driver, :func:`plan_key`: ``route`` (a serialized lastmile.common.v1.Route, legs
included), ``route_id``, ``version``, ``acked`` (highest version of that route the app
acknowledged). A store never replaces a newer version of the same route with an older one
(pushes may finish out of order).
"""

from __future__ import annotations

from typing import Any

from lastmile.common.v1 import route_pb2

from core.redis_scripts import Script

FIELD_ROUTE = "route"
FIELD_ROUTE_ID = "route_id"
FIELD_VERSION = "version"
FIELD_ACKED = "acked"
#: What the gateway reads for Welcome, in this order (see :func:`route_if_unacked`).
WELCOME_FIELDS = (FIELD_ROUTE, FIELD_VERSION, FIELD_ACKED)
#: What tracking reads per batch, in this order.
HEADER_FIELDS = (FIELD_ROUTE_ID, FIELD_VERSION)

# KEYS[1] plan key; ARGV: route_id, version, acked, route bytes.
_STORE = Script("""
local current = redis.call('HMGET', KEYS[1], 'route_id', 'version')
if current[1] == ARGV[1] and tonumber(current[2] or '0') > tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'route_id', ARGV[1], 'version', ARGV[2], 'acked', ARGV[3],
  'route', ARGV[4])
return 1
""")
# KEYS[1] plan key; ARGV: route_id, acked version. Only the mirrored route, only upwards.
_ACK = Script("""
if redis.call('HGET', KEYS[1], 'route_id') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'acked') or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'acked', ARGV[2])
return 1
""")


def plan_key(driver_id: str) -> str:
    """The hash mirroring the driver's current route version."""
    return f"lastmile:driver:{driver_id}:route"


async def store(redis: Any, route: route_pb2.Route) -> bool:
    """Mirror ``route`` as its driver's current version; False when a newer version of the
    same route is mirrored already."""
    stored = await _STORE(
        redis,
        [plan_key(route.driver_id)],
        [route.route_id, route.version, route.acked_version, route.SerializeToString()],
    )
    return bool(stored)


async def record_ack(redis: Any, driver_id: str, route_id: str, version: int) -> bool:
    """Mirror an acknowledgement (only of the mirrored route, only upwards)."""
    return bool(await _ACK(redis, [plan_key(driver_id)], [route_id, version]))


def route_if_unacked(values: list[Any]) -> route_pb2.Route | None:
    """The mirrored route when its version is not acknowledged, from the :data:`WELCOME_FIELDS`
    values of an HMGET (None when nothing is mirrored or it is acknowledged)."""
    raw, version, acked = values
    if raw is None or version is None or int(acked or 0) >= int(version):
        return None
    return route_pb2.Route.FromString(bytes(raw))
