"""The ETA engine waits at a pickup for the kitchen (tracking/eta.py, eta_plan.py), on real
PostgreSQL, Redis and OSRM: an order its origin expects ready in 20 minutes is not promised
before then, and the ETA follows when the kitchen says it is ready."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from lastmile.common.v1 import common_pb2

from core.bus import Bus
from core.db import Database
from core.geo import LatLng
from core.roads import RoadNetwork
from core.settings import Settings
from tests.helpers import east_of
from tests.integration.conftest import Platform
from tests.integration.pod_support import DOOR, PICKUP, SeededOrder, seed_order
from tracking.active_orders import ActiveOrders
from tracking.eta import EtaEngine, eta_key
from tracking.eta_plan import DROP_OFF as DROP_OFF_STOP
from tracking.eta_plan import PICKUP as PICKUP_STOP
from tracking.positions import PositionUpdate

pytestmark = pytest.mark.integration
ACCEPTED = 2  # lastmile.origin.v1.OriginDecision
COOKING = dt.timedelta(minutes=20)


@dataclass
class Engine:
    """An ETA engine in this process and what it reads and writes."""

    settings: Settings
    bus: Bus
    database: Database
    active: ActiveOrders
    eta: EtaEngine

    async def eta_of(self, order: SeededOrder, near: LatLng) -> dt.datetime:
        """The ETA stored for ``order`` after its driver reported a fix at ``near``."""
        now = dt.datetime.now(dt.UTC)
        update = PositionUpdate(
            driver_id=order.driver_id,
            at=now,
            position=near,
            snapped=None,
            speed_mps=0.0,
            heading_deg=0.0,
            status=common_pb2.DRIVER_STATUS_TO_PICKUP,
            current_order_id=order.order_id,
            current_stop_id="",
            fixes=(),
            tenant_id=order.tenant_id,
        )
        await self.eta.on_positions([update])
        eta_ms = await self.bus.redis.hget(eta_key(order.order_id), "eta_ms")
        assert eta_ms is not None, "no ETA stored"
        return dt.datetime.fromtimestamp(int(eta_ms) / 1000, dt.UTC)


@pytest.fixture
async def engine(
    platform: Platform, private_settings: Settings, roads: RoadNetwork
) -> AsyncIterator[Engine]:
    settings = private_settings.replace(database_url=platform.settings.database_url)
    bus, database = Bus(settings), Database(settings)
    await bus.start()
    await database.start()
    active = ActiveOrders(settings, bus, database)
    try:
        yield Engine(
            settings, bus, database, active, EtaEngine(settings, bus, database, roads, active)
        )
    finally:
        await database.stop()
        await bus.stop()


async def _order(
    conn: asyncpg.Connection, settings: Settings, ready_in: dt.timedelta | None
) -> SeededOrder:
    """A driver on the way to the pickup; with ``ready_in``, its origin accepted it and
    expects it ready that long from now."""
    tenant = f"eta-ready-{uuid.uuid4().hex[:8]}"
    order = await seed_order(
        conn, settings, tenant, f"drv-{uuid.uuid4().hex[:8]}", common_pb2.ORDER_STATUS_TO_PICKUP
    )
    if ready_in is not None:
        origin_id = f"org-{uuid.uuid4().hex[:8]}"
        await conn.execute(
            "INSERT INTO origins (origin_id, tenant_id, name, lat, lng) VALUES ($1, $2, 'Kitchen', $3, $4)",
            origin_id,
            tenant,
            PICKUP.lat,
            PICKUP.lng,
        )
        await conn.execute(
            "INSERT INTO origin_orders (order_id, tenant_id, origin_id, decision, ready_at)"
            " VALUES ($1, $2, $3, $4, now() + $5::interval)",
            order.order_id,
            tenant,
            origin_id,
            ACCEPTED,
            ready_in,
        )
    return order


async def test_an_order_still_cooking_is_not_promised_before_it_is_ready(engine: Engine) -> None:
    near_pickup = east_of(PICKUP, 300)
    conn = await asyncpg.connect(engine.settings.database_url)
    try:
        plain = await _order(conn, engine.settings, None)
        cooking = await _order(conn, engine.settings, COOKING)
        ready_at = await conn.fetchval(
            "SELECT ready_at FROM origin_orders WHERE order_id = $1", cooking.order_id
        )
        without_wait = await engine.eta_of(plain, near_pickup)
        with_wait = await engine.eta_of(cooking, near_pickup)
        # A few minutes' drive either way; the cooking one leaves the kitchen once ready.
        assert without_wait < ready_at
        service = dt.timedelta(seconds=engine.settings.eta_pickup_service_s)
        assert with_wait > ready_at + service
        drive_after_pickup = with_wait - (ready_at + service)
        assert drive_after_pickup < dt.timedelta(minutes=10), (with_wait, ready_at)

        # The kitchen marks it ready now: the order event drops the cached orders, and the
        # next fix gets an ETA without the wait.
        await conn.execute(
            "UPDATE origin_orders SET ready_at = now(), decision = 4 WHERE order_id = $1",
            cooking.order_id,
        )
        await engine.active.invalidate_orders([cooking.order_id])
        ready_now = await engine.eta_of(cooking, near_pickup)
        assert ready_now < ready_at
        assert abs(ready_now - without_wait) < dt.timedelta(minutes=1)
    finally:
        await conn.close()


async def test_a_planned_route_waits_at_the_pickup_too(engine: Engine) -> None:
    """With a route, the stops come from route_stops: its pickup waits for the order's ready
    time read now, not the one the route was planned with (an hour off here)."""
    conn = await asyncpg.connect(engine.settings.database_url)
    try:
        order = await _order(conn, engine.settings, COOKING)
        ready_at = await conn.fetchval(
            "SELECT ready_at FROM origin_orders WHERE order_id = $1", order.order_id
        )
        route_id = f"rte-{uuid.uuid4().hex[:8]}"
        await conn.execute(
            "INSERT INTO routes (route_id, tenant_id, driver_id) VALUES ($1, $2, $3)",
            route_id,
            order.tenant_id,
            order.driver_id,
        )
        planned_ready = ready_at + dt.timedelta(hours=1)
        for position, (kind, where, window_start) in enumerate(
            [(PICKUP_STOP, PICKUP, planned_ready), (DROP_OFF_STOP, DOOR, None)]
        ):
            await conn.execute(
                "INSERT INTO route_stops (route_id, position, stop_id, kind, order_id, lat, lng,"
                " window_start, service_time_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 60)",
                route_id,
                position,
                f"{route_id}-{position}",
                kind,
                order.order_id,
                where.lat,
                where.lng,
                window_start,
            )
        await conn.execute(
            "UPDATE orders SET route_id = $1 WHERE order_id = $2", route_id, order.order_id
        )
        eta = await engine.eta_of(order, east_of(PICKUP, 300))
        assert ready_at + dt.timedelta(seconds=60) < eta < planned_ready, (eta, ready_at)
    finally:
        await conn.close()
