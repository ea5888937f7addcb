"""SearchDrivers: live drivers inside a circle, rectangle, polygon or isochrone, nearest first.

Every shape starts with one Lua script in Redis (:data:`_NEAREST`): a GEOSEARCH around a centre,
nearest first, whose rows are kept only when the driver's live-state hash has a wanted status
and the caller's tenant (a dispatcher finds only drivers of its own tenant, as if the others
were not there). One round trip returns only the matching rows, each with the live state the
answer shows (read in the same atomic step as the filter, so a driver is never shown in a status
the search did not ask for, and no second round trip fetches the states); asking for more
doubles the count (growing batches), so a search near many drivers reads only as many as it
needs.

* circle: ``BYRADIUS``; the script starts with a small radius and doubles it up to the circle's
  while fewer rows than asked lie inside (GEOSEARCH costs what the searched area holds: a
  dense city's 9 km circle holds most of the fleet). All drivers within a radius, nearest
  first, are the nearest of the whole circle too, so the result stays exact.
* rectangle: ``BYBOX`` from the box centre, then an exact inside-the-box filter (Redis's box
  test is on its own approximation of the box).
* polygon: ``BYBOX`` covering the polygon from its centroid, then point-in-polygon.
* isochrone: a circle of ``max_drive x isochrone_max_speed_mps`` (no driver farther than
  that as the crow flies can arrive in time: the bound is a speed no road in OSRM's car profile
  reaches, motorways being 90 km/h = 25 m/s), then OSRM table calls from the candidates to the
  centre in chunks, nearest by straight line first. The search stops once it holds ``limit``
  drivers no slower than the fastest conceivable drive of the next candidate (distance / the
  speed bound), so the answer is exact; ``isochrone_max_candidates`` caps the work for huge
  areas (beyond it the farthest candidates are not considered).

The script reads driver hashes it is not given as keys: fine on one Redis (the platform's), not
on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core import live_state_keys as keys
from core.bus import as_text
from core.errors import InvalidArgument
from core.geo import Bounds, LatLng, bounds_of, point_in_polygon, polygon_centroid
from core.inputs import client_seconds, enum_values
from core.redis_scripts import Script
from core.road_pool import RoadPool
from core.settings import Settings
from tracking.area_input import box_from, circle_from, point_from, polygon_from
from tracking.live_state import decode_state

# Redis's BYBOX test works on its own box approximation: ask for a slightly larger one and
# filter exactly afterwards.
_BOX_SLACK = 1.01
_BOX_SLACK_M = 10.0
_FIRST_BATCH_FACTOR = 2
_MIN_BATCH = 32
# Where radius searches start before doubling: a few city blocks, which in a busy area already
# hold a page of drivers.
_FIRST_RADIUS_M = 250.0

# The live-state fields a search reads, in the order the script returns them. The script tests
# the first four (status, tenant, raw position), so they stay first.
_STATE_FIELDS = (
    keys.FIELD_STATUS,
    keys.FIELD_TENANT,
    keys.FIELD_LAT,
    keys.FIELD_LNG,
    keys.FIELD_NAME,
    keys.FIELD_HEADING,
    keys.FIELD_SPEED,
    keys.FIELD_POSITION_AT,
    keys.FIELD_CURRENT_ORDER_ID,
    keys.FIELD_CURRENT_STOP_ID,
    keys.FIELD_SNAPPED_LAT,
    keys.FIELD_SNAPPED_LNG,
    keys.FIELD_STATUS_AT,
)

# KEYS[1] geo set. ARGV: lng, lat, radius m ('' for a box), box width m, box height m, rows
# wanted, first radius m, tenant, driver hash key prefix, wanted statuses as ',1,2,', then the
# hash fields to return (:data:`_STATE_FIELDS`). Returns {1 when the area holds nothing more,
# {{member, dist, value of each field...}, ...}}: at most ``wanted`` rows. The position is the
# hash's (the same latest raw fix as the GEO set's).
_NEAREST = Script(
    """
local function around(radius, count)
  if ARGV[3] ~= '' then
    return redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', radius,
      'm', 'ASC', 'COUNT', count, 'WITHDIST')
  end
  return redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYBOX', ARGV[4],
    ARGV[5], 'm', 'ASC', 'COUNT', count, 'WITHDIST')
end
local fields = {unpack(ARGV, 11)}
local want = tonumber(ARGV[6])
local full = tonumber(ARGV[3] ~= '' and ARGV[3] or '0')
local radius = math.min(full, tonumber(ARGV[7]))
local scan = want
-- A wider scan returns the rows of the narrower one first: each driver is checked once.
local checked, examined, out = {}, 0, {}
while true do
  local rows = around(radius, scan)
  if #rows < scan and radius < full then
    -- Grow to where the density seen puts `scan` rows, with a margin: every GEOSEARCH scans
    -- all its boxes' drivers, so one call too wide costs less than two narrow ones.
    local grow = math.sqrt(scan / math.max(#rows, 1)) * 1.2
    radius = math.min(full, radius * math.min(math.max(grow, 1.5), 4))
  else
    for _, row in ipairs(rows) do
      if not checked[row[1]] then
        checked[row[1]] = true
        examined = examined + 1
        local state = redis.call('HMGET', ARGV[9] .. row[1], unpack(fields))
        local status = state[1] or '0'
        if (state[2] or '') == ARGV[8] and state[3] and
            string.find(ARGV[10], ',' .. status .. ',', 1, true) then
          out[#out + 1] = {row[1], row[2], unpack(state)}
          if #out == want then return {0, out} end
        end
      end
    end
    if #rows < scan then
      return {1, out}
    end
    -- Enough rows for `want` at the share of wanted drivers seen so far, with a margin.
    local share = math.max(#out, 1) / examined
    scan = math.floor(math.min(scan * 4, math.max(scan * 1.25, want / share * 1.2)))
  end
end
"""
)


@dataclass(frozen=True, slots=True)
class Area:
    """Where to look: a GEOSEARCH query plus an exact test of candidates."""

    center: LatLng
    radius_m: float | None = None
    box_m: tuple[float, float] | None = None
    contains: Callable[[LatLng], bool] | None = None
    max_drive_s: float | None = None


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which drivers count: these statuses, of this tenant."""

    statuses: frozenset[int]
    tenant_id: str

    def status_list(self) -> str:
        """The statuses as the script matches them: ``,1,2,``."""
        return "," + ",".join(str(s) for s in sorted(self.statuses)) + ","


@dataclass(frozen=True, slots=True)
class Candidate:
    """A driver found by GEOSEARCH whose status matches, with its live-state hash values
    (:data:`_STATE_FIELDS` order, None when unset; decoded only for the drivers answered)."""

    driver_id: str
    distance_m: float
    position: LatLng
    values: tuple[bytes | None, ...]

    def match(self, drive_time_s: float = 0.0) -> fleet_service_pb2.DriverMatch:
        """The answer's row for this driver."""
        fields = {
            name: value
            for name, value in zip(_STATE_FIELDS, self.values, strict=True)
            if value is not None
        }
        return fleet_service_pb2.DriverMatch(
            driver=decode_state(self.driver_id, fields),
            distance_m=self.distance_m,
            drive_time_s=drive_time_s,
        )


def parse_area(request: fleet_service_pb2.SearchDriversRequest, settings: Settings) -> Area:
    """The request's area, checked; InvalidArgument when it is missing or malformed."""
    kind = request.WhichOneof("area")
    if kind == "circle":
        circle = circle_from(request.circle, "circle", settings)
        return Area(circle.center, radius_m=circle.radius_m)
    if kind == "rectangle":
        box = box_from(request.rectangle, "rectangle", settings)
        return Area(box.center, box_m=_padded(box.size_m()), contains=box.contains)
    if kind == "polygon":
        vertices = polygon_from(request.polygon, "polygon", settings)
        return _polygon_area(vertices)
    if kind == "isochrone":
        return _isochrone_area(request.isochrone, settings)
    raise InvalidArgument("one of circle, rectangle, polygon or isochrone is required")


def _padded(size: tuple[float, float]) -> tuple[float, float]:
    return size[0] * _BOX_SLACK + _BOX_SLACK_M, size[1] * _BOX_SLACK + _BOX_SLACK_M


def _polygon_area(vertices: list[LatLng]) -> Area:
    center = polygon_centroid(vertices)
    bounds = bounds_of(vertices)
    # A box centred on the centroid that still covers the polygon's bounds.
    half_lat = max(center.lat - bounds.south, bounds.north - center.lat)
    half_lng = max(center.lng - bounds.west, bounds.east - center.lng)
    around = Bounds(
        center.lat - half_lat, center.lng - half_lng, center.lat + half_lat, center.lng + half_lng
    )
    return Area(
        center,
        box_m=_padded(around.size_m()),
        contains=lambda p: bounds.contains(p) and point_in_polygon(p, vertices),
    )


def _isochrone_area(message: tracking_pb2.Isochrone, settings: Settings) -> Area:
    if not message.HasField("center"):
        raise InvalidArgument("isochrone.center is required")
    center = point_from(message.center, "isochrone.center")
    drive_s = client_seconds(message.max_drive, "isochrone.max_drive")
    if drive_s <= 0:
        raise InvalidArgument(f"isochrone.max_drive must be positive, got {drive_s} s")
    if drive_s > settings.isochrone_max_drive_s:
        raise InvalidArgument(
            f"isochrone.max_drive {drive_s} s exceeds the maximum {settings.isochrone_max_drive_s} s"
        )
    radius = min(drive_s * settings.isochrone_max_speed_mps, settings.search_max_radius_m)
    return Area(center, radius_m=radius, max_drive_s=drive_s)


def parse_statuses(request: fleet_service_pb2.SearchDriversRequest) -> frozenset[int]:
    """Statuses asked for; empty means every status but OFFLINE."""
    asked = enum_values(request.statuses, common_pb2.DriverStatus.DESCRIPTOR, "statuses")
    if asked:
        return asked
    return frozenset(common_pb2.DriverStatus.values()) - {
        common_pb2.DRIVER_STATUS_UNSPECIFIED,
        common_pb2.DRIVER_STATUS_OFFLINE,
    }


def parse_limit(request: fleet_service_pb2.SearchDriversRequest, settings: Settings) -> int:
    """The result cap: default when unset, refused when negative or above the maximum."""
    if request.limit == 0:
        return settings.search_default_limit
    if request.limit < 0 or request.limit > settings.search_max_limit:
        raise InvalidArgument(
            f"limit must be between 1 and {settings.search_max_limit}, got {request.limit}"
        )
    return request.limit


class DriverSearch:
    """Answers SearchDrivers from live state (and OSRM for isochrones)."""

    def __init__(self, client: aioredis.Redis, roads: RoadPool, settings: Settings):
        self._redis = client
        self._roads = roads
        self._settings = settings

    async def search(
        self, request: fleet_service_pb2.SearchDriversRequest, tenant_id: str
    ) -> fleet_service_pb2.SearchDriversResponse:
        """Validate the request and run it over ``tenant_id``'s drivers."""
        area = parse_area(request, self._settings)
        wanted = Wanted(parse_statuses(request), tenant_id)
        limit = parse_limit(request, self._settings)
        if area.max_drive_s is not None:
            matches = await self._isochrone(area, wanted, limit)
        else:
            matches = await self._straight(area, wanted, limit)
        return fleet_service_pb2.SearchDriversResponse(drivers=matches)

    async def _straight(
        self, area: Area, wanted: Wanted, limit: int
    ) -> list[fleet_service_pb2.DriverMatch]:
        found: list[Candidate] = []
        async for batch in self._batches(area, wanted, limit * _FIRST_BATCH_FACTOR):
            found += batch
            if len(found) >= limit:
                break
        return [candidate.match() for candidate in found[:limit]]

    async def _isochrone(
        self, area: Area, wanted: Wanted, limit: int
    ) -> list[fleet_service_pb2.DriverMatch]:
        drive_limit = area.max_drive_s or 0.0
        cap = self._settings.isochrone_max_candidates
        chunk = self._settings.isochrone_table_chunk
        found: list[tuple[float, Candidate]] = []
        examined = 0
        # One GEOSEARCH for all the candidates the cap allows: in a large radius each call
        # scans every driver in it, so growing batches would pay that again and again.
        async for batch in self._batches(area, wanted, cap):
            batch = batch[: cap - examined]
            # The whole batch at once (the road pool spreads it over its workers); the stop
            # test below still walks it in chunks, nearest first.
            times = await self._roads.durations_to([c.position for c in batch], area.center)
            for start in range(0, len(batch), chunk):
                part = batch[start : start + chunk]
                for candidate, seconds in zip(part, times[start : start + chunk], strict=True):
                    if seconds is not None and seconds <= drive_limit:
                        found.append((seconds, candidate))
                examined += len(part)
                found.sort(key=lambda timed: timed[0])
                # Nobody farther than the last examined candidate can be faster than this.
                floor_s = part[-1].distance_m / self._settings.isochrone_max_speed_mps
                if len(found) >= limit and found[limit - 1][0] <= floor_s:
                    return _timed_matches(found[:limit])
            if examined >= cap:
                break
        return _timed_matches(found[:limit])

    async def _batches(
        self, area: Area, wanted: Wanted, first: int
    ) -> AsyncIterator[list[Candidate]]:
        """Matching candidates nearest first, in batches, fetching more only when asked."""
        count = max(first, _MIN_BATCH)
        seen: set[str] = set()
        while True:
            rows, exhausted = await self._nearest(area, wanted, count)
            batch = [
                candidate
                for candidate in rows
                if candidate.driver_id not in seen
                and (area.contains is None or area.contains(candidate.position))
            ]
            seen.update(candidate.driver_id for candidate in rows)
            if batch:
                yield batch
            if exhausted:
                return
            count *= 2

    async def _nearest(
        self, area: Area, wanted: Wanted, count: int
    ) -> tuple[list[Candidate], bool]:
        """Up to ``count`` wanted drivers around the centre, nearest first, and whether the
        area holds no more (see :data:`_NEAREST`)."""
        if area.radius_m is not None:
            shape = [area.radius_m, "", ""]
        else:
            width, height = area.box_m  # type: ignore[misc]
            shape = ["", width, height]
        reply: Any = await _NEAREST(
            self._redis,
            [keys.DRIVERS_GEO],
            [
                area.center.lng,
                area.center.lat,
                *shape,
                count,
                _FIRST_RADIUS_M,
                wanted.tenant_id,
                keys.driver_key(""),
                wanted.status_list(),
                *_STATE_FIELDS,
            ],
        )
        exhausted, rows = reply
        return [_candidate(row) for row in rows], bool(int(exhausted))


def _candidate(row: list[Any]) -> Candidate:
    """A script row: member, distance, then the :data:`_STATE_FIELDS` values."""
    member, dist, *values = row
    if len(values) != len(_STATE_FIELDS):
        raise ValueError(f"search script returned {len(values)} values for {len(_STATE_FIELDS)}")
    # Fields 3 and 4 are the raw position (the script keeps only rows that have one).
    return Candidate(
        as_text(member), float(dist), LatLng(float(values[2]), float(values[3])), tuple(values)
    )


def _timed_matches(found: list[tuple[float, Candidate]]) -> list[fleet_service_pb2.DriverMatch]:
    return [candidate.match(seconds) for seconds, candidate in found]
