"""The wave planner's schedule: every ``wave_interval_s`` it plans, per tenant, the pending
planned orders whose drop-off window opens within ``wave_horizon_s`` (and whose origin, if
any, accepted them) onto the tenant's free drivers, through the same use case as
DispatchService.PlanWave.

A free driver is active, has a depot (routes start and end there), no route under way and no
order in hand. Orders left unassigned stay pending for the next wave. ``wave_interval_s`` 0
turns the schedule off (PlanWave by hand still works).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

from google.protobuf.duration_pb2 import Duration
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as pb

from core.auth import Principal, Role, set_current_principal
from core.errors import ServiceError
from core.workers import cancel
from dispatch import origin_orders
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.routes import plan_wave_rpc

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)

#: Orders a driver holds between assignment and hand-over.
IN_HAND = [sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP, sm.PICKED_UP, sm.NEARBY]


class WaveScheduler:
    """Worker component running :func:`plan_due_waves` on a timer."""

    service_names: tuple[str, ...] = ()

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer; present for the Component protocol."""

    async def start(self) -> None:
        """Start the timer unless the schedule is off."""
        if self._ctx.settings.wave_interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="wave-scheduler")

    async def stop(self) -> None:
        """Stop the timer (a wave being stored finishes its current transaction first)."""
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._ctx.settings.wave_interval_s)
            try:
                await plan_due_waves(self._ctx)
            except Exception:
                log.exception("wave planning failed; retried at the next wave")


async def plan_due_waves(ctx: DispatchContext) -> int:
    """Plan one wave per tenant with due orders; returns how many orders were assigned."""
    horizon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ctx.settings.wave_horizon_s)
    async with ctx.database.pool.acquire() as conn:
        due = await conn.fetch(
            "SELECT o.tenant_id, array_agg(o.order_id) AS orders FROM orders o"
            " WHERE o.status = $1 AND o.kind = $2"
            " AND (o.drop_off_start IS NULL OR o.drop_off_start <= $3)"
            # Orders their origin has not accepted yet wait for a later wave.
            f" AND {origin_orders.DISPATCHABLE_SQL} GROUP BY o.tenant_id",
            sm.PENDING,
            dispatch_pb2.ORDER_KIND_PLANNED,
            horizon,
        )
        free = {row["tenant_id"]: await _free_drivers(conn, row["tenant_id"]) for row in due}
    assigned = 0
    for row in due:
        drivers = free[row["tenant_id"]]
        if drivers:
            assigned += await _plan(ctx, row["tenant_id"], list(row["orders"]), drivers)
    return assigned


async def _free_drivers(conn: Conn, tenant_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT d.driver_id FROM drivers d WHERE d.tenant_id = $1 AND d.active"
        " AND d.depot_lat IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM routes r WHERE r.driver_id = d.driver_id AND r.active)"
        " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.driver_id = d.driver_id"
        "   AND o.status = ANY($2::smallint[]))"
        " ORDER BY d.driver_id",
        tenant_id,
        IN_HAND,
    )
    return [r["driver_id"] for r in rows]


async def _plan(ctx: DispatchContext, tenant_id: str, orders: list[str], drivers: list[str]) -> int:
    limit = Duration()
    limit.FromTimedelta(dt.timedelta(seconds=ctx.settings.wave_time_limit_s))
    request = pb.PlanWaveRequest(order_ids=orders, driver_ids=drivers, time_limit=limit)
    set_current_principal(Principal("wave-scheduler", Role.SERVICE, tenant_id))
    try:
        response = await plan_wave_rpc(ctx, request)
    except ServiceError as exc:
        log.warning("wave not planned", extra={"tenant": tenant_id, "reason": str(exc)})
        return 0
    finally:
        set_current_principal(None)
    planned = sum(len({s.order_id for s in route.stops}) for route in response.routes)
    log.info(
        "wave planned",
        extra={"tenant": tenant_id, "routes": len(response.routes), "orders": planned},
    )
    return planned
