"""The driver registry and the external providers registry (UpsertDriver/ListDrivers,
UpsertProvider/ListProviders)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from core.errors import AlreadyExists, InvalidArgument
from core.settings import Settings
from dispatch import paging
from dispatch.convert import check_position, window_bounds, window_of
from dispatch.driver_breaks import breaks_json, breaks_of

if TYPE_CHECKING:
    from core.db import Conn
    from dispatch.order_store import Row


async def upsert_driver(
    conn: Conn, tenant_id: str, driver: dispatch_pb2.Driver
) -> dispatch_pb2.Driver:
    """Create or update a driver of the tenant; INVALID_ARGUMENT for bad fields."""
    if not driver.driver_id or not driver.name:
        raise InvalidArgument("driver.driver_id and driver.name are required")
    if driver.capacity_units < 0:
        raise InvalidArgument("driver.capacity_units must not be negative")
    depot: tuple[float | None, float | None] = (None, None)
    if driver.HasField("depot"):
        depot = check_position(driver.depot, "driver.depot")
    shift = window_bounds(driver.shift, "driver.shift", driver.HasField("shift"))
    breaks = breaks_json(driver)
    row = await conn.fetchrow(
        "INSERT INTO drivers (driver_id, tenant_id, name, phone, capacity_units, depot_lat,"
        " depot_lng, shift_start, shift_end, active, breaks) VALUES ($1, $2, $3, $4, $5, $6,"
        " $7, $8, $9, $10, $11::jsonb) ON CONFLICT (driver_id) DO UPDATE SET"
        " name = EXCLUDED.name, phone = EXCLUDED.phone,"
        " capacity_units = EXCLUDED.capacity_units,"
        " depot_lat = EXCLUDED.depot_lat, depot_lng = EXCLUDED.depot_lng,"
        " shift_start = EXCLUDED.shift_start, shift_end = EXCLUDED.shift_end,"
        " active = EXCLUDED.active, breaks = EXCLUDED.breaks, updated_at = now()"
        " WHERE drivers.tenant_id = EXCLUDED.tenant_id RETURNING *",
        driver.driver_id,
        tenant_id,
        driver.name,
        driver.phone,
        driver.capacity_units,
        *depot,
        *shift,
        driver.active,
        breaks,
    )
    if row is None:
        raise AlreadyExists(f"driver id {driver.driver_id!r} is taken")
    return driver_message(dict(row))


def driver_message(row: Row) -> dispatch_pb2.Driver:
    """The Driver message of a row."""
    driver = dispatch_pb2.Driver(
        driver_id=row["driver_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        phone=row["phone"],
        capacity_units=row["capacity_units"],
        active=row["active"],
    )
    if row["depot_lat"] is not None:
        driver.depot.CopyFrom(common_pb2.LatLng(lat=row["depot_lat"], lng=row["depot_lng"]))
    shift = window_of(row["shift_start"], row["shift_end"])
    if shift is not None:
        driver.shift.CopyFrom(shift)
    driver.breaks.extend(breaks_of(row.get("breaks")))
    return driver


async def list_drivers(
    conn: Conn, settings: Settings, tenant_id: str, size: int, token: str
) -> tuple[list[dispatch_pb2.Driver], str]:
    """The tenant's drivers by id, keyset-paged."""
    limit = paging.page_size(settings, size)
    after = paging.decode_token(token, 1)
    rows = await conn.fetch(
        "SELECT * FROM drivers WHERE tenant_id = $1 AND driver_id > $2 ORDER BY driver_id LIMIT $3",
        tenant_id,
        str(after[0]) if after else "",
        limit + 1,
    )
    page = rows[:limit]
    next_token = paging.encode_token([page[-1]["driver_id"]]) if len(rows) > limit else ""
    return [driver_message(dict(r)) for r in page], next_token


async def upsert_provider(
    conn: Conn, tenant_id: str, provider: dispatch_pb2.Provider
) -> dispatch_pb2.Provider:
    """Create or update an external provider; INVALID_ARGUMENT for a bad transport or URL."""
    if not provider.provider_id or not provider.name:
        raise InvalidArgument("provider.provider_id and provider.name are required")
    if provider.transport not in (
        dispatch_pb2.PROVIDER_TRANSPORT_WEBHOOK,
        dispatch_pb2.PROVIDER_TRANSPORT_POLLING,
    ):
        raise InvalidArgument("provider.transport must be WEBHOOK or POLLING")
    url = urlsplit(provider.endpoint_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidArgument("provider.endpoint_url must be an http(s) URL")
    row = await conn.fetchrow(
        "INSERT INTO providers (provider_id, tenant_id, name, transport, endpoint_url, enabled)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider_id) DO UPDATE SET"
        " name = EXCLUDED.name, transport = EXCLUDED.transport,"
        " endpoint_url = EXCLUDED.endpoint_url, enabled = EXCLUDED.enabled"
        " WHERE providers.tenant_id = EXCLUDED.tenant_id RETURNING *",
        provider.provider_id,
        tenant_id,
        provider.name,
        provider.transport,
        provider.endpoint_url.rstrip("/"),
        provider.enabled,
    )
    if row is None:
        raise AlreadyExists(f"provider id {provider.provider_id!r} is taken")
    return provider_message(dict(row))


def provider_message(row: Row) -> dispatch_pb2.Provider:
    """The Provider message of a row."""
    return dispatch_pb2.Provider(
        provider_id=row["provider_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        transport=row["transport"],
        endpoint_url=row["endpoint_url"],
        enabled=row["enabled"],
    )


async def list_providers(conn: Conn, tenant_id: str) -> list[dispatch_pb2.Provider]:
    """The tenant's providers by id."""
    rows = await conn.fetch(
        "SELECT * FROM providers WHERE tenant_id = $1 ORDER BY provider_id", tenant_id
    )
    return [provider_message(dict(r)) for r in rows]
