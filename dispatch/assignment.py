"""Manual (re)assignment of an order to a driver by a dispatcher (DispatchService.AssignOrder).

An order not yet picked up can be given to any active driver of the tenant. Reassigning an
assigned order records two events (back to PENDING, then ASSIGNED to the new driver) so the
history shows who had it; the previous driver is told the order left their list.

Routes follow the order: its remaining stops leave the route that held them (a new version)
and join the new driver's active route, or a new one (:mod:`dispatch.route_insert`); both
drivers get their new version with reason ``reassigned`` (``assigned`` for an order nobody
had).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lastmile.dispatch.v1 import dispatch_pb2, dispatch_service_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.auth import Role, require
from core.driver_commands import send_command
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from dispatch import decisions, order_store, route_insert, route_versions
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.order_store import Actor, Row

if TYPE_CHECKING:
    from core.db import Conn

#: Statuses an order may be (re)assigned from: nothing has been picked up yet.
ASSIGNABLE = frozenset({sm.PENDING, sm.OFFERED, sm.RESCHEDULED, sm.ASSIGNED, sm.TO_PICKUP})


async def assign_order(
    ctx: DispatchContext, request: dispatch_service_pb2.AssignOrderRequest
) -> dispatch_pb2.Order:
    """Give the order to ``driver_id``; idempotent when it already has that driver."""
    principal = require(Role.DISPATCHER, Role.SERVICE)
    if not request.order_id or not request.driver_id:
        raise InvalidArgument("order_id and driver_id are required")
    actor = Actor(f"{principal.role.value}:{principal.subject}")
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row = await order_store.fetch_order(conn, principal.tenant_id, request.order_id, lock=True)
        await _check_driver(conn, principal.tenant_id, request.driver_id)
        previous = row["driver_id"]
        if previous == request.driver_id and row["status"] in (sm.ASSIGNED, sm.TO_PICKUP):
            return order_store.order_message(row)
        if row["status"] not in ASSIGNABLE:
            raise FailedPrecondition(
                f"the order is {sm.name(row['status'])}: only orders not yet picked up can be"
                " assigned"
            )
        left = await route_versions.remove_orders(ctx, conn, [request.order_id])
        row = await _assign(ctx, conn, row, request.driver_id, request.reason, actor)
    ctx.wake_outbox()
    decisions.record("assign", "reassigned" if previous else "assigned")
    if previous and previous != request.driver_id:
        withdrawn = driver_pb2.OrderCancelled(order_id=request.order_id, reason="reassigned")
        await send_command(
            ctx.bus, previous, driver_service_pb2.ConnectResponse(order_cancelled=withdrawn)
        )
    gained = row["route_id"]
    await route_versions.push_current(ctx, [r for r in left if r != gained], "reassigned")
    await route_versions.push_current(ctx, [gained], "reassigned" if previous else "assigned")
    return order_store.order_message(row)


async def _check_driver(conn: Conn, tenant_id: str, driver_id: str) -> None:
    active = await conn.fetchval(
        "SELECT active FROM drivers WHERE driver_id = $1 AND tenant_id = $2", driver_id, tenant_id
    )
    if active is None:
        raise NotFound(f"driver {driver_id!r} not found")
    if not active:
        raise FailedPrecondition(f"driver {driver_id!r} is not active")


async def _assign(
    ctx: DispatchContext, conn: Conn, row: Row, driver_id: str, reason: str, actor: Actor
) -> Row:
    details = {"driver_id": driver_id, "reason": reason, "previous_driver_id": row["driver_id"]}
    if row["status"] in (sm.ASSIGNED, sm.TO_PICKUP):
        row, _ = await order_store.apply_change(
            conn,
            row,
            "unassigned",
            actor,
            to_status=sm.PENDING,
            changes={"driver_id": None},
            details=details,
        )
    route = await route_insert.place_orders(ctx, conn, row["tenant_id"], driver_id, [row])
    row, _ = await order_store.apply_change(
        conn,
        row,
        "assigned",
        actor,
        to_status=sm.ASSIGNED,
        changes={"driver_id": driver_id, "route_id": route["route_id"]},
        details=details,
    )
    return row
