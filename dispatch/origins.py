"""Origins (restaurants, stores, depots): UpsertOrigin, GetOrigin, ListOrigins. Each origin is
tagged with the area its position lies in and names the fallback origins its rejected orders
go to (dispatch.origin_rules). Decisions on orders: dispatch.origin_orders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf.duration_pb2 import Duration
from lastmile.origin.v1 import origin_pb2

from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.inputs import check_enum
from core.settings import Settings
from dispatch import areas, origin_rules, paging
from dispatch.convert import check_position, message_from_json, message_json

if TYPE_CHECKING:
    from core.db import Conn
    from dispatch.order_store import Row


async def upsert_origin(
    conn: Conn, settings: Settings, tenant_id: str, origin: origin_pb2.Origin
) -> origin_pb2.Origin:
    """Create or update an origin; its area comes from the area polygons (area_id sent by
    the client is ignored)."""
    if not origin.origin_id or not origin.name:
        raise InvalidArgument("origin.origin_id and origin.name are required")
    check_enum(origin.kind, origin_pb2.OriginKind.DESCRIPTOR, "origin.kind", unset_ok=True)
    lat, lng = check_position(origin.address.location, "origin.address.location")
    origin_rules.preparation_s(
        origin.default_preparation, settings.origin_max_preparation_s, "origin.default_preparation"
    )
    fallbacks = origin_rules.check_fallbacks(origin.origin_id, origin.fallback_origin_ids)
    await _check_fallbacks_exist(conn, tenant_id, fallbacks)
    area_id = await areas.area_containing(conn, tenant_id, lat, lng)
    row = await conn.fetchrow(
        "INSERT INTO origins (origin_id, tenant_id, name, kind, address, lat, lng, area_id,"
        " default_preparation_s, fallback_origin_ids, closed)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (origin_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,"
        " address = EXCLUDED.address, lat = EXCLUDED.lat, lng = EXCLUDED.lng,"
        " area_id = EXCLUDED.area_id, default_preparation_s = EXCLUDED.default_preparation_s,"
        " fallback_origin_ids = EXCLUDED.fallback_origin_ids, closed = EXCLUDED.closed"
        " WHERE origins.tenant_id = EXCLUDED.tenant_id RETURNING *",
        origin.origin_id,
        tenant_id,
        origin.name,
        origin.kind,
        message_json(origin.address),
        lat,
        lng,
        area_id,
        origin.default_preparation.seconds,
        fallbacks,
        origin.closed,
    )
    if row is None:
        raise AlreadyExists(f"origin id {origin.origin_id!r} is taken")
    return origin_message(dict(row))


async def _check_fallbacks_exist(conn: Conn, tenant_id: str, fallbacks: list[str]) -> None:
    """FAILED_PRECONDITION unless every fallback is an origin of the tenant."""
    if not fallbacks:
        return
    known = await conn.fetch(
        "SELECT origin_id FROM origins WHERE tenant_id = $1 AND origin_id = ANY($2::text[])",
        tenant_id,
        fallbacks,
    )
    missing = set(fallbacks) - {r["origin_id"] for r in known}
    if missing:
        raise FailedPrecondition(f"fallback origins not registered: {', '.join(sorted(missing))}")


def origin_message(row: Row) -> origin_pb2.Origin:
    """The Origin message of a row."""
    origin = origin_pb2.Origin(
        origin_id=row["origin_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        kind=row["kind"],
        area_id=row["area_id"] or "",
        default_preparation=Duration(seconds=row["default_preparation_s"]),
        fallback_origin_ids=row["fallback_origin_ids"],
        closed=row["closed"],
    )
    message_from_json(row["address"], origin.address)
    origin.address.location.lat, origin.address.location.lng = row["lat"], row["lng"]
    return origin


async def get_origin(conn: Conn, tenant_id: str, origin_id: str) -> origin_pb2.Origin:
    """One origin of the tenant; NotFound otherwise."""
    row = await conn.fetchrow(
        "SELECT * FROM origins WHERE origin_id = $1 AND tenant_id = $2", origin_id, tenant_id
    )
    if row is None:
        raise NotFound(f"origin {origin_id!r} not found")
    return origin_message(dict(row))


async def list_origins(
    conn: Conn, settings: Settings, tenant_id: str, size: int, token: str
) -> tuple[list[origin_pb2.Origin], str]:
    """The tenant's origins by id, keyset-paged."""
    limit = paging.page_size(settings, size)
    after = paging.decode_token(token, 1)
    rows = await conn.fetch(
        "SELECT * FROM origins WHERE tenant_id = $1 AND origin_id > $2 ORDER BY origin_id LIMIT $3",
        tenant_id,
        str(after[0]) if after else "",
        limit + 1,
    )
    page = rows[:limit]
    next_token = paging.encode_token([page[-1]["origin_id"]]) if len(rows) > limit else ""
    return [origin_message(dict(r)) for r in page], next_token
