"""Geofences: checked, stored in the ``geofences`` table, listed, deleted.

Each change bumps a version counter in Redis (:data:`VERSION_KEY`); geofence engines compare
it with the version of their cached fences once per batch, so a change reaches every processor
within one batch, and none misses it the way a pub/sub message can be missed.

Order fences apply to the drivers named when the fence is created (dispatch sets the assigned
driver); a fence with no drivers applies to every driver of its tenant. A fence never watches
another tenant's drivers, and may only name an order of its own tenant (NOT_FOUND otherwise,
the same as for an order that does not exist).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.bus import Bus
from core.db import Database
from core.errors import InvalidArgument, NotFound
from core.geo import Bounds, LatLng, bounds_of, haversine_m, signed_distance_to_polygon_m
from core.inputs import check_enum
from core.settings import Settings
from tracking.area_input import CircleArea, circle_from, polygon_from

#: Bumped on every create or delete; engines reload their fences when it changes.
VERSION_KEY = "lastmile:geofences:version"
_MAX_NAME = 200
_MAX_DWELL_S = 24 * 3600
_MAX_DRIVERS = 1000
_COLUMNS = "geofence_id, name, shape, order_id, purpose, min_dwell_s, driver_ids"


@dataclass(frozen=True, slots=True)
class Fence:
    """A geofence ready for position checks."""

    geofence_id: str
    name: str
    order_id: str
    purpose: int
    min_dwell_s: int
    driver_ids: frozenset[str]
    circle: CircleArea | None
    polygon: tuple[LatLng, ...]
    bounds: Bounds
    #: The tenant the fence belongs to ('' for a fence not read from storage).
    tenant_id: str = ""

    def signed_distance_m(self, point: LatLng) -> float:
        """Metres from the boundary: negative inside, positive outside."""
        if self.circle is not None:
            return haversine_m(point, self.circle.center) - self.circle.radius_m
        return signed_distance_to_polygon_m(point, self.polygon)

    def applies_to(self, driver_id: str, tenant_id: str) -> bool:
        """Whether the fence watches this driver (of this tenant)."""
        if tenant_id != self.tenant_id:
            return False
        return not self.driver_ids or driver_id in self.driver_ids

    def to_proto(self) -> tracking_pb2.Geofence:
        """The contract's view of the fence."""
        message = tracking_pb2.Geofence(
            geofence_id=self.geofence_id,
            name=self.name,
            order_id=self.order_id,
            purpose=self.purpose,  # type: ignore[arg-type]
            min_dwell=Duration(seconds=self.min_dwell_s),
            driver_ids=sorted(self.driver_ids),
        )
        if self.circle is not None:
            message.circle.center.lat = self.circle.center.lat
            message.circle.center.lng = self.circle.center.lng
            message.circle.radius_m = self.circle.radius_m
        else:
            message.polygon.vertices.extend(
                common_pb2.LatLng(lat=v.lat, lng=v.lng) for v in self.polygon
            )
        return message


def fence_from_proto(message: tracking_pb2.Geofence, settings: Settings, fence_id: str) -> Fence:
    """A checked fence from a request; InvalidArgument names the bad field."""
    if len(message.name) > _MAX_NAME:
        raise InvalidArgument(f"geofence.name is longer than {_MAX_NAME} characters")
    check_enum(message.purpose, tracking_pb2.GeofencePurpose.DESCRIPTOR, "geofence.purpose", True)
    dwell = message.min_dwell
    if dwell.seconds < 0 or dwell.nanos < 0 or dwell.seconds > _MAX_DWELL_S:
        raise InvalidArgument(f"geofence.min_dwell must be between 0 and {_MAX_DWELL_S} s")
    drivers = frozenset(message.driver_ids)
    if "" in drivers or len(drivers) > _MAX_DRIVERS:
        raise InvalidArgument(f"geofence.driver_ids must be 1..{_MAX_DRIVERS} non-empty ids")
    shape = message.WhichOneof("shape")
    circle: CircleArea | None = None
    polygon: tuple[LatLng, ...] = ()
    if shape == "circle":
        circle = circle_from(message.circle, "geofence.circle", settings)
        bounds = _circle_bounds(circle)
    elif shape == "polygon":
        polygon = tuple(polygon_from(message.polygon, "geofence.polygon", settings))
        bounds = bounds_of(polygon)
    else:
        raise InvalidArgument("geofence needs a circle or a polygon")
    return Fence(
        fence_id,
        message.name,
        message.order_id,
        message.purpose,
        round(dwell.seconds + dwell.nanos / 1e9),
        drivers,
        circle,
        polygon,
        bounds,
    )


def _circle_bounds(circle: CircleArea) -> Bounds:
    # One degree of latitude is ~111 km; longitude degrees shrink with the cosine.
    dlat = circle.radius_m / 111_195.0
    dlng = dlat / max(math.cos(math.radians(circle.center.lat)), 1e-6)
    c = circle.center
    return Bounds(c.lat - dlat, c.lng - dlng, c.lat + dlat, c.lng + dlng)


def _shape_json(fence: Fence) -> str:
    if fence.circle is not None:
        c = fence.circle
        return json.dumps(
            {"circle": {"lat": c.center.lat, "lng": c.center.lng, "radius_m": c.radius_m}}
        )
    return json.dumps({"polygon": [[v.lat, v.lng] for v in fence.polygon]})


def _fence_from_row(row: Any) -> Fence:
    shape = json.loads(row["shape"]) if isinstance(row["shape"], str) else row["shape"]
    circle: CircleArea | None = None
    polygon: tuple[LatLng, ...] = ()
    if "circle" in shape:
        raw = shape["circle"]
        circle = CircleArea(LatLng(raw["lat"], raw["lng"]), float(raw["radius_m"]))
        bounds = _circle_bounds(circle)
    else:
        polygon = tuple(LatLng(lat, lng) for lat, lng in shape["polygon"])
        bounds = bounds_of(polygon)
    return Fence(
        row["geofence_id"],
        row["name"],
        row["order_id"] or "",
        row["purpose"],
        row["min_dwell_s"],
        frozenset(row["driver_ids"]),
        circle,
        polygon,
        bounds,
        row.get("tenant_id", ""),
    )


def _page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _after_id(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("page_token is not a token this service issued") from exc


class GeofenceStore:
    """Geofence rows of one database, scoped by tenant for callers (usable before the database
    and bus start: it reaches their pools on each call)."""

    def __init__(self, database: Database, bus: Bus, settings: Settings) -> None:
        self._database = database
        self._bus = bus
        self._settings = settings

    @property
    def _pool(self) -> asyncpg.Pool[Any]:
        return self._database.pool

    @property
    def _redis(self) -> aioredis.Redis:
        return self._bus.redis

    async def create(self, tenant_id: str, message: tracking_pb2.Geofence) -> Fence:
        """Store a new fence (its id is assigned here) and tell the engines."""
        fence = fence_from_proto(message, self._settings, "gf_" + secrets.token_hex(10))
        if fence.order_id and not await self._pool.fetchval(
            "SELECT 1 FROM orders WHERE order_id = $1 AND tenant_id = $2", fence.order_id, tenant_id
        ):
            raise NotFound(f"order {fence.order_id} not found")
        try:
            await self._pool.execute(
                f"INSERT INTO geofences (tenant_id, {_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                tenant_id,
                fence.geofence_id,
                fence.name,
                _shape_json(fence),
                fence.order_id or None,
                fence.purpose,
                fence.min_dwell_s,
                sorted(fence.driver_ids),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"order {fence.order_id} not found") from exc
        await self._redis.incr(VERSION_KEY)
        return fence

    async def get(self, tenant_id: str, geofence_id: str) -> Fence:
        """One fence of the tenant; NotFound otherwise."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM geofences WHERE tenant_id = $1 AND geofence_id = $2",
            tenant_id,
            geofence_id,
        )
        if row is None:
            raise NotFound(f"geofence {geofence_id} not found")
        return _fence_from_row(row)

    async def page(
        self, tenant_id: str, order_id: str, page_size: int, page_token: str
    ) -> tuple[list[Fence], str]:
        """A page of the tenant's fences by id, and the token of the next page ('' at the end)."""
        if page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {page_size}")
        size = min(
            page_size or self._settings.geofence_list_max_page,
            self._settings.geofence_list_max_page,
        )
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM geofences WHERE tenant_id = $1 AND geofence_id > $2"
            " AND ($3 = '' OR order_id = $3) ORDER BY geofence_id LIMIT $4",
            tenant_id,
            _after_id(page_token),
            order_id,
            size + 1,
        )
        fences = [_fence_from_row(r) for r in rows[:size]]
        more = len(rows) > size
        return fences, _page_token(fences[-1].geofence_id) if more else ""

    async def delete(self, tenant_id: str, geofence_id: str) -> None:
        """Remove a fence; deleting a missing fence is not an error (idempotent)."""
        await self._pool.execute(
            "DELETE FROM geofences WHERE tenant_id = $1 AND geofence_id = $2",
            tenant_id,
            geofence_id,
        )
        await self._redis.incr(VERSION_KEY)

    async def load_all(self) -> tuple[int, list[Fence]]:
        """Every fence of every tenant with the version they correspond to (for engines)."""
        # Read the version first: a change racing with the load bumps it again, so the engine
        # reloads on its next batch rather than keeping a stale set under a fresh version.
        version = int(await self._redis.get(VERSION_KEY) or 0)
        rows = await self._pool.fetch(f"SELECT tenant_id, {_COLUMNS} FROM geofences")
        return version, [_fence_from_row(r) for r in rows]
