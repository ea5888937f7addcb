"""Routes: planning a wave into drivers' routes (PlanWave) and reading one (GetRoute).

PlanWave loads the tenant's pending planned orders (or the given ones) and the given active
drivers, runs :func:`dispatch.planning.plan_wave` off the event loop, then stores each route
in its own transaction (the driver's previous active route retired, the stops written with a
STOP_KIND_BREAK stop for each break the plan schedules, every order assigned through
``order_store.apply_change``) and pushes it to the driver's app as a
RouteUpdate with turn-by-turn legs. Times given to the solver are seconds from the wave start.
Re-optimizing a route under way is in :mod:`dispatch.route_reoptimize`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import route_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as pb

from core import live_state_keys as keys
from core.auth import Role, require
from core.bus import Bus
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.geo import LatLng
from core.inputs import client_seconds
from core.roads import NoRoute, RoadNetwork
from core.roads import Route as RoadRoute
from core.settings import Settings
from dispatch import decisions, order_store, origin_orders, route_push, route_store
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now, to_datetime
from dispatch.driver_breaks import breaks_of, solver_breaks
from dispatch.order_store import Actor, Row
from dispatch.planning import (
    PlannedBreak,
    PlannedRoute,
    WaveDriver,
    WaveOrder,
    WavePlan,
    plan_wave,
)
from dispatch.route_store import BREAK, DROP_OFF, PICKUP, StopRow
from dispatch.solver.backends import NoFeasibleSolution
from dispatch.solver.model import NodeKind

if TYPE_CHECKING:
    from core.db import Conn

#: Solver budget when the request gives none, and the most a request may ask for (the
#: contract of PlanWaveRequest.time_limit).
DEFAULT_TIME_LIMIT_S = 10.0
MAX_TIME_LIMIT_S = 300.0
#: Window bound used when an order or driver has none: the solver needs finite horizons.
OPEN_HORIZON_S = 24 * 3600.0
#: Seconds at a stop (parking, hand-over) assumed by the planner.
SERVICE_S = 120
#: Capacity used for a driver registered without one (0 means "not tracked", not "empty").
UNTRACKED_CAPACITY = 1_000_000


@cache
def _open(path: Path) -> RoadNetwork:
    return RoadNetwork(path)


def road_network(settings: Settings) -> RoadNetwork:
    """The road network of ``settings``' graph, opened on first use and shared afterwards."""
    return _open(settings.graph_path)


def time_limit_s(limit: Duration, present: bool) -> float:
    """The solver budget of a request; INVALID_ARGUMENT outside (0, MAX_TIME_LIMIT_S]."""
    if not present:
        return DEFAULT_TIME_LIMIT_S
    seconds = client_seconds(limit, "time_limit")
    if not 0.0 < seconds <= MAX_TIME_LIMIT_S:
        raise InvalidArgument(f"time_limit must be in (0, {MAX_TIME_LIMIT_S:g}] s, got {seconds}")
    return seconds


def actor_of_caller() -> tuple[str, Actor]:
    """The caller's tenant and the actor label of the changes it makes (dispatcher/service)."""
    principal = require(Role.DISPATCHER, Role.SERVICE)
    return principal.tenant_id, Actor(f"{principal.role.value}:{principal.subject}")


def seconds_from(start: dt.datetime, at: dt.datetime | None, default: float) -> float:
    """``at`` as seconds from ``start`` (``default`` when unset)."""
    return default if at is None else (at - start).total_seconds()


def window_s(
    start: dt.datetime, bounds: tuple[dt.datetime | None, dt.datetime | None]
) -> tuple[float, float]:
    """A stored window as solver seconds from ``start``, open bounds closed at the horizon."""
    return (
        max(0.0, seconds_from(start, bounds[0], 0.0)),
        seconds_from(start, bounds[1], OPEN_HORIZON_S),
    )


async def live_position(bus: Bus, driver_id: str) -> LatLng | None:
    """The driver's latest position from the live state (snapped when it was), if any."""
    state = await bus.redis.hgetall(keys.driver_key(driver_id))
    fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()}

    def text(name: str) -> str:
        value = fields.get(name, b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    for lat, lng in (
        (keys.FIELD_SNAPPED_LAT, keys.FIELD_SNAPPED_LNG),
        (keys.FIELD_LAT, keys.FIELD_LNG),
    ):
        if text(lat) and text(lng):
            return LatLng(float(text(lat)), float(text(lng)))
    return None


async def load_drivers(
    conn: Conn, bus: Bus, tenant_id: str, driver_ids: Sequence[str], start: dt.datetime
) -> list[WaveDriver]:
    """The wave's drivers: active, starting at their depot (or where they are when they have
    none), else a clear error."""
    rows = {
        r["driver_id"]: r
        for r in await conn.fetch(
            "SELECT * FROM drivers WHERE tenant_id = $1 AND driver_id = ANY($2)",
            tenant_id,
            list(driver_ids),
        )
    }
    drivers = []
    for driver_id in dict.fromkeys(driver_ids):
        row = rows.get(driver_id)
        if row is None:
            raise NotFound(f"driver {driver_id!r} not found")
        if not row["active"]:
            raise FailedPrecondition(f"driver {driver_id!r} is not active")
        depot = await live_position(bus, driver_id)
        if row["depot_lat"] is not None:
            depot = LatLng(row["depot_lat"], row["depot_lng"])
        if depot is None:
            raise FailedPrecondition(f"driver {driver_id!r} has no depot and no live position")
        shift = window_s(start, (row["shift_start"], row["shift_end"]))
        capacity = row["capacity_units"] or UNTRACKED_CAPACITY
        breaks = solver_breaks(breaks_of(row["breaks"]), start)
        drivers.append(WaveDriver(driver_id, depot, capacity, shift, breaks))
    return drivers


async def load_orders(conn: Conn, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Row]:
    """The given orders (each must be the tenant's, pending and accepted by its origin, if
    any), or every such pending planned order of the tenant when none are given; each with
    its origin's ``ready_at`` (origin_orders.ready_for_planning)."""
    if not order_ids:
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE tenant_id = $1 AND status = $2 AND kind = $3",
            tenant_id,
            sm.PENDING,
            dispatch_pb2.ORDER_KIND_PLANNED,
        )
        everyone = {r["order_id"]: dict(r) for r in rows}
        return await origin_orders.ready_for_planning(conn, everyone, strict=False)
    found = {}
    for order_id in dict.fromkeys(order_ids):
        row = await order_store.fetch_order(conn, tenant_id, order_id)
        if row["status"] != sm.PENDING:
            raise FailedPrecondition(
                f"order {order_id!r} is {sm.name(row['status'])}: only pending orders are planned"
            )
        found[order_id] = row
    return await origin_orders.ready_for_planning(conn, found, strict=True)


def wave_order(row: Row, start: dt.datetime) -> WaveOrder:
    """The planner's view of an order row."""
    return WaveOrder(
        order_id=row["order_id"],
        area_id=row["area_id"] or "",
        drop_off=LatLng(row["drop_off_lat"], row["drop_off_lng"]),
        drop_off_window=window_s(start, (row["drop_off_start"], row["drop_off_end"])),
        pickup=LatLng(row["pickup_lat"], row["pickup_lng"]),
        pickup_window=window_s(start, origin_orders.pickup_bounds(row)),
        units=row["size_units"],
        service_s=float(SERVICE_S),
    )


def stop_row(kind: int, order: Row, stop_id: str = "") -> StopRow:
    """The stop of ``order`` of ``kind`` (pickup or drop-off), with the order's window."""
    prefix = "pickup" if kind == PICKUP else "drop_off"
    return StopRow(
        stop_id=stop_id or route_store.new_stop_id(),
        kind=kind,
        order_id=order["order_id"],
        location=LatLng(order[f"{prefix}_lat"], order[f"{prefix}_lng"]),
        # A pickup waits for the origin's ready time too (pickup_bounds).
        window=origin_orders.pickup_bounds(order)
        if kind == PICKUP
        else (order[f"{prefix}_start"], order[f"{prefix}_end"]),
        service_time_s=SERVICE_S,
    )


def with_breaks(
    stops: Sequence[StopRow], breaks: Sequence[PlannedBreak], start_at: LatLng, start: dt.datetime
) -> list[StopRow]:
    """``stops`` with a break stop wherever the plan takes one: at the stop it follows (the
    route's start for a break before the first stop), its window the break's start window."""
    result = list(stops)
    for planned in sorted(breaks, key=lambda b: (b.after, b.start), reverse=True):
        where = stops[planned.after - 1].location if planned.after else start_at
        brk = planned.brk
        result.insert(
            planned.after,
            StopRow(
                stop_id=route_store.new_stop_id(),
                kind=BREAK,
                order_id="",
                location=where,
                window=(
                    start + dt.timedelta(seconds=brk.earliest),
                    start + dt.timedelta(seconds=brk.latest),
                ),
                service_time_s=math.ceil(brk.duration),
            ),
        )
    return result


def with_arrivals(
    stops: Sequence[StopRow], road: RoadRoute | None, start: dt.datetime
) -> list[StopRow]:
    """The stops with planned arrivals: drive the legs, wait for windows, serve."""
    if road is None:
        return list(stops)
    at = start
    result = []
    for stop, leg in zip(stops, road.legs, strict=True):
        at += dt.timedelta(seconds=leg.duration_s)
        if stop.window[0] is not None and at < stop.window[0]:
            at = stop.window[0]
        result.append(dataclasses.replace(stop, planned_arrival=at))
        at += dt.timedelta(seconds=stop.service_time_s)
    return result


def drive(roads: RoadNetwork, origin: LatLng | None, stops: Sequence[StopRow]) -> RoadRoute | None:
    """The OSRM route from ``origin`` (the first stop when None) through ``stops`` with
    turn-by-turn steps; None when there is nothing to drive or no road."""
    if not stops:
        return None
    points = [origin or stops[0].location, *(s.location for s in stops)]
    try:
        return roads.route(points, steps=True)
    except NoRoute:
        return None


async def assign_orders(
    conn: Conn, tenant_id: str, order_ids: Sequence[str], route: Row, actor: Actor
) -> None:
    """Every order (still pending, locked) assigned to the route's driver and the route."""
    for order_id in dict.fromkeys(order_ids):
        row = await order_store.fetch_order(conn, tenant_id, order_id, lock=True)
        if row["status"] != sm.PENDING:
            raise FailedPrecondition(
                f"order {order_id!r} became {sm.name(row['status'])} while it was planned"
            )
        await order_store.apply_change(
            conn,
            row,
            "assigned",
            actor,
            to_status=sm.ASSIGNED,
            changes={"driver_id": route["driver_id"], "route_id": route["route_id"]},
            details={"driver_id": route["driver_id"], "route_id": route["route_id"]},
        )


async def push_route(ctx: DispatchContext, route: route_pb2.Route, reason: str) -> None:
    """Send the route to its driver's app (mirrored first: :mod:`dispatch.route_push`)."""
    await route_push.publish(ctx, route, reason)


async def plan_wave_rpc(ctx: DispatchContext, request: pb.PlanWaveRequest) -> pb.PlanWaveResponse:
    """PlanWave (see the module doc)."""
    tenant_id, actor = actor_of_caller()
    if not request.driver_ids:
        raise InvalidArgument("driver_ids is required")
    limit = time_limit_s(request.time_limit, request.HasField("time_limit"))
    start = to_datetime(request.start, "start") if request.HasField("start") else now()
    async with ctx.database.pool.acquire() as conn:
        drivers = await load_drivers(conn, ctx.bus, tenant_id, request.driver_ids, start)
        orders = await load_orders(conn, tenant_id, request.order_ids)
    if not orders:
        return pb.PlanWaveResponse()
    roads = road_network(ctx.settings)
    wave = [wave_order(row, start) for row in orders.values()]
    try:
        plan: WavePlan = await asyncio.to_thread(plan_wave, roads, wave, drivers, limit)
    except NoFeasibleSolution as exc:
        raise FailedPrecondition(f"no feasible plan: {exc}") from exc
    depots = {d.driver_id: d.depot for d in drivers}
    response = pb.PlanWaveResponse(unassigned_order_ids=plan.unassigned)
    decisions.record("wave", "unassigned", len(plan.unassigned))
    decisions.record("wave", "assigned", len({s.order_id for r in plan.routes for s in r.stops}))
    for planned in plan.routes:
        route = await _store_planned(ctx, tenant_id, actor, planned, orders, depots, start)
        await push_route(ctx, route, "planned")
        response.routes.append(route)
    ctx.wake_outbox()
    return response


async def _store_planned(
    ctx: DispatchContext,
    tenant_id: str,
    actor: Actor,
    planned: PlannedRoute,
    orders: dict[str, Row],
    depots: dict[str, LatLng],
    start: dt.datetime,
) -> route_pb2.Route:
    """One planned route stored (route, stops, assignments in one transaction)."""
    stops = [
        stop_row(PICKUP if s.kind is NodeKind.PICKUP else DROP_OFF, orders[s.order_id])
        for s in planned.stops
    ]
    stops = with_breaks(stops, planned.breaks, depots[planned.driver_id], start)
    roads = road_network(ctx.settings)
    road = await asyncio.to_thread(drive, roads, depots[planned.driver_id], stops)
    stops = with_arrivals(stops, road, start)
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        route = await route_store.insert_route(conn, tenant_id, planned.driver_id, start, road)
        await route_store.replace_stops(conn, route["route_id"], 0, stops)
        await assign_orders(
            conn, tenant_id, [s.order_id for s in stops if s.order_id], route, actor
        )
    return route_store.route_message(route, stops, orders, road)


async def driver_depot(conn: Conn, driver_id: str) -> LatLng | None:
    """The driver's depot, if registered."""
    row = await conn.fetchrow(
        "SELECT depot_lat, depot_lng FROM drivers WHERE driver_id = $1", driver_id
    )
    if row is None or row["depot_lat"] is None:
        return None
    return LatLng(row["depot_lat"], row["depot_lng"])
