"""Service areas and their provider rules: storage, validation, which area a point is in,
and the split decision of a new order (rules engine in dispatch.rules)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.geo import LatLng, bounds_of, point_in_polygon, polygon_problem
from dispatch import rules
from dispatch.convert import check_position

if TYPE_CHECKING:
    from core.db import Conn


@dataclass(frozen=True, slots=True)
class Pickup:
    """Where an order is picked up, and the area its origin is tagged with (if any)."""

    lat: float
    lng: float
    area_id: str | None


async def pickup_of(conn: Conn, tenant_id: str, order: dispatch_pb2.Order) -> Pickup:
    """The pickup position: the order's own, else its origin's; INVALID_ARGUMENT for an
    unknown origin, FAILED_PRECONDITION for a closed one."""
    if not order.origin_id:
        location = order.pickup_address.location
        return Pickup(location.lat, location.lng, None)
    origin = await conn.fetchrow(
        "SELECT lat, lng, area_id, closed FROM origins WHERE origin_id = $1 AND tenant_id = $2",
        order.origin_id,
        tenant_id,
    )
    if origin is None:
        raise InvalidArgument(f"order.origin_id {order.origin_id!r} is not a known origin")
    if origin["closed"]:
        raise FailedPrecondition(f"origin {order.origin_id!r} is closed: it takes no orders")
    location = order.pickup_address.location
    if location.lat or location.lng:
        check_position(location, "order.pickup_address.location")
        return Pickup(location.lat, location.lng, origin["area_id"])
    return Pickup(origin["lat"], origin["lng"], origin["area_id"])


async def area_containing(conn: Conn, tenant_id: str, lat: float, lng: float) -> str | None:
    """The tenant's area holding the point (the first by id when areas overlap)."""
    rows = await conn.fetch(
        "SELECT area_id, boundary FROM areas WHERE tenant_id = $1 AND min_lat <= $2"
        " AND max_lat >= $2 AND min_lng <= $3 AND max_lng >= $3 ORDER BY area_id",
        tenant_id,
        lat,
        lng,
    )
    point = LatLng(lat, lng)
    for row in rows:
        if point_in_polygon(point, _vertices(row["boundary"])):
            return str(row["area_id"])
    return None


async def load_rules(conn: Conn, area_id: str) -> list[rules.Rule]:
    """An area's rules in their stored order."""
    rows = await conn.fetch(
        "SELECT * FROM provider_rules WHERE area_id = $1 ORDER BY position", area_id
    )
    return [
        rules.Rule(
            priority=r["priority"],
            fleet=r["fleet"],
            provider_id=r["provider_id"] or "",
            share_percent=r["share_percent"],
            order_kind=r["order_kind"],
            fallback_provider_id=r["fallback_provider_id"] or "",
        )
        for r in rows
    ]


async def enabled_providers(conn: Conn, tenant_id: str) -> set[str]:
    """Ids of the tenant's enabled external providers."""
    rows = await conn.fetch(
        "SELECT provider_id FROM providers WHERE tenant_id = $1 AND enabled", tenant_id
    )
    return {str(r["provider_id"]) for r in rows}


async def decide_split(
    conn: Conn,
    tenant_id: str,
    order_id: str,
    kind: int,
    pickup: Pickup,
    refused: frozenset[str] = frozenset(),
) -> rules.Split:
    """The rules engine's decision for an order picked up at ``pickup``."""
    area_id = pickup.area_id or await area_containing(conn, tenant_id, pickup.lat, pickup.lng)
    if area_id is None:
        return rules.split(order_id, kind, "", [], set())
    available = await enabled_providers(conn, tenant_id) - refused
    return rules.split(order_id, kind, area_id, await load_rules(conn, area_id), available)


# --- area CRUD ------------------------------------------------------------------------------


def _vertices(boundary: Any) -> list[LatLng]:
    pairs = json.loads(boundary) if isinstance(boundary, str) else boundary
    return [LatLng(float(lat), float(lng)) for lat, lng in pairs]


def check_area(area: dispatch_pb2.Area) -> tuple[list[LatLng], list[rules.Rule]]:
    """The area's vertices and rules; INVALID_ARGUMENT for a bad polygon or bad rules."""
    if not area.name:
        raise InvalidArgument("area.name is required")
    for i, vertex in enumerate(area.boundary.vertices):
        check_position(vertex, f"area.boundary.vertices[{i}]")
    vertices = [LatLng(v.lat, v.lng) for v in area.boundary.vertices]
    if len(vertices) < 3:
        raise InvalidArgument("area.boundary needs at least 3 vertices")
    problem = polygon_problem(vertices)
    if problem is not None:
        raise InvalidArgument(f"area.boundary: {problem}")
    found = [
        rules.Rule(
            r.priority,
            r.fleet,
            r.provider_id,
            r.share_percent,
            r.order_kind,
            r.fallback_provider_id,
        )
        for r in area.rules
    ]
    rules.validate_rules(found)
    return vertices, found


async def upsert_area(conn: Conn, tenant_id: str, area: dispatch_pb2.Area) -> dispatch_pb2.Area:
    """Create or replace an area and its rules (inside the caller's transaction), then re-tag
    the tenant's origins."""
    vertices, found = check_area(area)
    area_id = area.area_id or "area_" + uuid.uuid4().hex[:12]
    await _check_providers(conn, tenant_id, found)
    box = bounds_of(vertices)
    stored = await conn.fetchval(
        "INSERT INTO areas (area_id, tenant_id, name, boundary, min_lat, min_lng, max_lat,"
        " max_lng) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (area_id) DO UPDATE SET"
        " name = EXCLUDED.name, boundary = EXCLUDED.boundary, min_lat = EXCLUDED.min_lat,"
        " min_lng = EXCLUDED.min_lng, max_lat = EXCLUDED.max_lat, max_lng = EXCLUDED.max_lng,"
        " updated_at = now() WHERE areas.tenant_id = EXCLUDED.tenant_id RETURNING area_id",
        area_id,
        tenant_id,
        area.name,
        json.dumps([[v.lat, v.lng] for v in vertices]),
        box.south,
        box.west,
        box.north,
        box.east,
    )
    if stored is None:
        raise AlreadyExists(f"area id {area_id!r} is taken")
    await conn.execute("DELETE FROM provider_rules WHERE area_id = $1", area_id)
    await conn.executemany(
        "INSERT INTO provider_rules (area_id, position, priority, fleet, provider_id,"
        " share_percent, order_kind, fallback_provider_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                area_id,
                i,
                r.priority,
                r.fleet,
                r.provider_id or None,
                r.share_percent,
                r.order_kind,
                r.fallback_provider_id or None,
            )
            for i, r in enumerate(found)
        ],
    )
    await retag_origins(conn, tenant_id)
    return await get_area(conn, tenant_id, area_id)


async def _check_providers(conn: Conn, tenant_id: str, found: list[rules.Rule]) -> None:
    named = {r.provider_id for r in found if r.provider_id}
    named |= {r.fallback_provider_id for r in found if r.fallback_provider_id}
    if not named:
        return
    known = await conn.fetch(
        "SELECT provider_id FROM providers WHERE tenant_id = $1 AND provider_id = ANY($2)",
        tenant_id,
        sorted(named),
    )
    missing = named - {r["provider_id"] for r in known}
    if missing:
        raise FailedPrecondition(f"providers not registered: {', '.join(sorted(missing))}")


async def retag_origins(conn: Conn, tenant_id: str) -> None:
    """Set every origin of the tenant to the area it lies in (areas changed)."""
    origins = await conn.fetch(
        "SELECT origin_id, lat, lng, area_id FROM origins WHERE tenant_id = $1", tenant_id
    )
    for origin in origins:
        area_id = await area_containing(conn, tenant_id, origin["lat"], origin["lng"])
        if area_id != origin["area_id"]:
            await conn.execute(
                "UPDATE origins SET area_id = $2 WHERE origin_id = $1", origin["origin_id"], area_id
            )


async def get_area(conn: Conn, tenant_id: str, area_id: str) -> dispatch_pb2.Area:
    """One area with its rules; NotFound when absent."""
    row = await conn.fetchrow(
        "SELECT * FROM areas WHERE area_id = $1 AND tenant_id = $2", area_id, tenant_id
    )
    if row is None:
        raise NotFound(f"area {area_id!r} not found")
    area = dispatch_pb2.Area(area_id=row["area_id"], tenant_id=row["tenant_id"], name=row["name"])
    area.boundary.vertices.extend(
        common_pb2.LatLng(lat=v.lat, lng=v.lng) for v in _vertices(row["boundary"])
    )
    for rule in await load_rules(conn, area_id):
        area.rules.add(
            priority=rule.priority,
            fleet=rule.fleet,
            provider_id=rule.provider_id,
            share_percent=rule.share_percent,
            order_kind=rule.order_kind,
            fallback_provider_id=rule.fallback_provider_id,
        )
    return area


async def list_areas(conn: Conn, tenant_id: str) -> list[dispatch_pb2.Area]:
    """Every area of the tenant, by id."""
    ids = await conn.fetch(
        "SELECT area_id FROM areas WHERE tenant_id = $1 ORDER BY area_id", tenant_id
    )
    return [await get_area(conn, tenant_id, r["area_id"]) for r in ids]


async def delete_area(conn: Conn, tenant_id: str, area_id: str) -> None:
    """Delete an area (its rules go with it; origins and orders lose the tag)."""
    deleted = await conn.fetchval(
        "DELETE FROM areas WHERE area_id = $1 AND tenant_id = $2 RETURNING area_id",
        area_id,
        tenant_id,
    )
    if deleted is None:
        raise NotFound(f"area {area_id!r} not found")
