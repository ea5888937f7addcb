"""The routes repository: ``routes`` and ``route_stops`` rows in and out, and Route messages.

A route's stops are stored by position; completed stops keep their place at the front, the
remaining ones follow in driving order. Stop ids are stable across versions so a driver's
app can match a stop of version 2 to the same stop of version 1.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lastmile.common.v1 import common_pb2, route_pb2

from core.errors import NotFound
from core.geo import LatLng
from core.roads import Route as RoadRoute
from dispatch.convert import message_from_json, to_timestamp, window_of
from dispatch.order_store import Row

if TYPE_CHECKING:
    from core.db import Conn

PICKUP = route_pb2.STOP_KIND_PICKUP
DROP_OFF = route_pb2.STOP_KIND_DROP_OFF
BREAK = route_pb2.STOP_KIND_BREAK


@dataclass(frozen=True, slots=True)
class StopRow:
    """One stop to store: what, where, when."""

    stop_id: str
    kind: int
    order_id: str
    location: LatLng
    window: tuple[dt.datetime | None, dt.datetime | None]
    service_time_s: int
    planned_arrival: dt.datetime | None = None
    completed_at: dt.datetime | None = None


def new_stop_id() -> str:
    """A fresh, globally unique stop id (route_stops.stop_id is unique across routes)."""
    return f"stp-{uuid.uuid4().hex[:16]}"


def new_route_id() -> str:
    """A fresh route id."""
    return f"rte-{uuid.uuid4().hex[:16]}"


def stop_of_row(row: Row) -> StopRow:
    """A StopRow of a ``route_stops`` row."""
    return StopRow(
        stop_id=row["stop_id"],
        kind=row["kind"],
        order_id=row["order_id"] or "",
        location=LatLng(row["lat"], row["lng"]),
        window=(row["window_start"], row["window_end"]),
        service_time_s=row["service_time_s"],
        planned_arrival=row["planned_arrival"],
        completed_at=row["completed_at"],
    )


async def fetch_route(
    conn: Conn, tenant_id: str, route_id: str = "", driver_id: str = "", lock: bool = False
) -> Row:
    """The route by id, or the driver's active route, of the tenant; NotFound otherwise."""
    if route_id:
        query, key, what = "route_id = $2", route_id, f"route {route_id!r}"
    else:
        query, key, what = "driver_id = $2 AND active", driver_id, f"active route of {driver_id!r}"
    row = await conn.fetchrow(
        f"SELECT * FROM routes WHERE tenant_id = $1 AND {query}" + (" FOR UPDATE" if lock else ""),
        tenant_id,
        key,
    )
    if row is None:
        raise NotFound(f"{what} not found")
    return dict(row)


async def fetch_stops(conn: Conn, route_id: str) -> list[StopRow]:
    """The route's stops by position."""
    rows = await conn.fetch(
        "SELECT * FROM route_stops WHERE route_id = $1 ORDER BY position", route_id
    )
    return [stop_of_row(dict(r)) for r in rows]


async def insert_route(
    conn: Conn,
    tenant_id: str,
    driver_id: str,
    planned_start: dt.datetime,
    road: RoadRoute | None,
) -> Row:
    """A new active route (version 1) of the driver; the previous active one is retired."""
    await conn.execute(
        "UPDATE routes SET active = false, updated_at = now() WHERE driver_id = $1 AND active",
        driver_id,
    )
    row = await conn.fetchrow(
        "INSERT INTO routes (route_id, tenant_id, driver_id, planned_start, distance_m,"
        " duration_s) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        new_route_id(),
        tenant_id,
        driver_id,
        planned_start,
        road.distance_m if road else 0.0,
        road.duration_s if road else 0.0,
    )
    assert row is not None
    return dict(row)


async def replace_stops(conn: Conn, route_id: str, first: int, stops: Sequence[StopRow]) -> None:
    """Rewrite the route's stops from position ``first`` on (the ones before stay)."""
    await conn.execute(
        "DELETE FROM route_stops WHERE route_id = $1 AND position >= $2", route_id, first
    )
    await conn.executemany(
        "INSERT INTO route_stops (route_id, position, stop_id, kind, order_id, lat, lng,"
        " window_start, window_end, service_time_s, planned_arrival, completed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [
            (
                route_id,
                first + k,
                s.stop_id,
                s.kind,
                s.order_id or None,
                s.location.lat,
                s.location.lng,
                s.window[0],
                s.window[1],
                s.service_time_s,
                s.planned_arrival,
                s.completed_at,
            )
            for k, s in enumerate(stops)
        ],
    )


async def bump_version(conn: Conn, route_id: str, road: RoadRoute | None) -> Row:
    """Version + 1 and the new totals, after the stops changed."""
    row = await conn.fetchrow(
        "UPDATE routes SET version = version + 1, distance_m = $2, duration_s = $3,"
        " updated_at = now() WHERE route_id = $1 RETURNING *",
        route_id,
        road.distance_m if road else 0.0,
        road.duration_s if road else 0.0,
    )
    assert row is not None
    return dict(row)


async def touch_version(conn: Conn, route_id: str) -> Row:
    """Version + 1 with the stops and totals unchanged (what an order of the route shows the
    driver changed, e.g. its instructions)."""
    row = await conn.fetchrow(
        "UPDATE routes SET version = version + 1, updated_at = now() WHERE route_id = $1"
        " RETURNING *",
        route_id,
    )
    assert row is not None
    return dict(row)


async def complete_order_stops(conn: Conn, order_id: str, kinds: Sequence[int]) -> None:
    """Mark the order's stops of these kinds completed (the driver is past them)."""
    if kinds:
        await conn.execute(
            "UPDATE route_stops SET completed_at = now() WHERE order_id = $1"
            " AND kind = ANY($2::smallint[]) AND completed_at IS NULL",
            order_id,
            list(kinds),
        )


async def complete_stop(conn: Conn, stop_id: str, driver_id: str) -> bool:
    """Mark one stop of the driver's active route completed; whether it was its stop."""
    done = await conn.fetchval(
        "UPDATE route_stops s SET completed_at = now() FROM routes r"
        " WHERE s.stop_id = $1 AND r.route_id = s.route_id AND r.driver_id = $2 AND r.active"
        " AND s.completed_at IS NULL RETURNING s.stop_id",
        stop_id,
        driver_id,
    )
    return done is not None


async def orders_by_id(conn: Conn, order_ids: Sequence[str]) -> dict[str, Row]:
    """Order rows by id (for the stops' addresses and instructions)."""
    rows = await conn.fetch("SELECT * FROM orders WHERE order_id = ANY($1)", list(set(order_ids)))
    return {r["order_id"]: dict(r) for r in rows}


def stop_message(stop: StopRow, order: Row | None) -> route_pb2.Stop:
    """The Stop message, with the order's address and instructions when it has an order."""
    message = route_pb2.Stop(
        stop_id=stop.stop_id,
        kind=stop.kind,  # type: ignore[arg-type]
        order_id=stop.order_id,
        location=common_pb2.LatLng(lat=stop.location.lat, lng=stop.location.lng),
        service_time_s=stop.service_time_s,
        planned_arrival=to_timestamp(stop.planned_arrival),
        completed=stop.completed_at is not None,
    )
    window = window_of(*stop.window)
    if window is not None:
        message.window.CopyFrom(window)
    if order is not None:
        # A return goes back to where the order was picked up.
        back = stop.kind in (PICKUP, route_pb2.STOP_KIND_RETURN)
        address = "pickup_address" if back else "drop_off_address"
        message_from_json(order[address], message.address)
        message.address.location.CopyFrom(message.location)
        message.access_notes = message.address.access_notes
        message_from_json(order["instructions"], message.instructions)
    return message


def leg_messages(road: RoadRoute | None) -> list[route_pb2.RouteLeg]:
    """RouteLeg messages of an OSRM route: each leg's steps, and its slice of the geometry
    (steps carry no geometry of their own here, so the full geometry is cut at the
    waypoints' nearest geometry points)."""
    if road is None:
        return []
    cuts = _cuts(road)
    legs = []
    for k, leg in enumerate(road.legs):
        message = route_pb2.RouteLeg(distance_m=leg.distance_m, duration_s=leg.duration_s)
        message.geometry.extend(_latlng(p) for p in road.geometry[cuts[k] : cuts[k + 1] + 1])
        for step in leg.steps:
            message.steps.append(
                route_pb2.RouteStep(
                    maneuver_type=step.maneuver_type,
                    maneuver_modifier=step.modifier or "",
                    street_name=step.name,
                    distance_m=step.distance_m,
                    duration_s=step.duration_s,
                    location=_latlng(step.location),
                )
            )
        legs.append(message)
    return legs


def _cuts(road: RoadRoute) -> list[int]:
    """Index in the geometry of each waypoint, searching forward so legs never overlap."""
    cuts: list[int] = []
    at = 0
    for waypoint in road.waypoints:
        best = min(
            range(at, len(road.geometry)),
            key=lambda i: _sq(road.geometry[i], waypoint.location),
            default=at,
        )
        cuts.append(best)
        at = best
    return cuts


def _sq(a: LatLng, b: LatLng) -> float:
    return (a.lat - b.lat) ** 2 + (a.lng - b.lng) ** 2


def _latlng(point: LatLng) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=point.lat, lng=point.lng)


def route_message(
    route: Row, stops: Sequence[StopRow], orders: dict[str, Row], road: RoadRoute | None
) -> route_pb2.Route:
    """The Route message of a route row, its stops and the OSRM legs leading to them."""
    return route_pb2.Route(
        route_id=route["route_id"],
        driver_id=route["driver_id"],
        version=route["version"],
        stops=[stop_message(s, orders.get(s.order_id)) for s in stops],
        legs=leg_messages(road),
        distance_m=route["distance_m"],
        duration_s=route["duration_s"],
        planned_start=to_timestamp(route["planned_start"]),
        acked_version=route.get("acked_version") or 0,
        acked_at=to_timestamp(route.get("acked_at")),
    )
