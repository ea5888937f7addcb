"""Customer changes mid-route: new delivery instructions, a new drop-off window.

Customers call with their tracking token (only its digest is stored), dispatchers and
services with their token. The assigned driver is told at once: an ``InstructionChange``
command on the driver's commands channel (core.driver_commands), and a new version of the route
holding the order (:mod:`dispatch.route_versions`): the same stops with the new instructions
(reason ``instructions``), or without the order's stops once it is rescheduled (``rescheduled``).
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import TYPE_CHECKING

from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.auth import Role, current_principal, tracking_token_digest
from core.driver_commands import send_command
from core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from dispatch import order_store, route_versions
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import check_instructions, message_json, now, window_bounds
from dispatch.order_store import CUSTOMER, Actor, Row

if TYPE_CHECKING:
    from core.db import Conn

STAFF = (Role.DISPATCHER, Role.SERVICE)


def check_caller(tracking_token: str) -> None:
    """Refuse, before the request is looked at, callers who may change no order at all: no
    credentials (UNAUTHENTICATED), or a token of a role other than staff without a tracking
    token (PERMISSION_DENIED). The link itself is checked with the order."""
    principal = current_principal()
    if tracking_token or (principal is not None and principal.role in STAFF):
        return
    if principal is not None:
        raise PermissionDenied(f"role {principal.role.value} may not change orders")
    raise Unauthenticated("this call needs a tracking token or a dispatcher token")


async def locked_order_for_change(
    conn: Conn, order_id: str, tracking_token: str
) -> tuple[Row, Actor]:
    """The order row, locked, if the caller may change it.

    Staff: their tenant's order, else NOT_FOUND. Customers: the token must belong to this
    order and be valid, else PERMISSION_DENIED, whether or not the order exists (a token
    holder learns nothing about other orders). No credentials: UNAUTHENTICATED.
    """
    principal = current_principal()
    if principal is not None and principal.role in STAFF:
        staff_row = await order_store.fetch_order(conn, principal.tenant_id, order_id, lock=True)
        return staff_row, Actor(f"{principal.role.value}:{principal.subject}")
    if not tracking_token:
        if principal is not None:
            raise PermissionDenied(f"role {principal.role.value} may not change orders")
        raise Unauthenticated("this call needs a tracking token or a dispatcher token")
    row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
    valid = (
        row is not None
        and hmac.compare_digest(row["tracking_token_digest"], tracking_token_digest(tracking_token))
        and not row["tracking_token_revoked"]
        and (row["tracking_token_expires_at"] is None or row["tracking_token_expires_at"] > now())
    )
    if not valid or row is None:
        raise PermissionDenied("the tracking token does not allow changing this order")
    return row, CUSTOMER


async def update_instructions(
    ctx: DispatchContext, request: order_service_pb2.UpdateInstructionsRequest
) -> dispatch_pb2.Order:
    """UpdateInstructions: FAILED_PRECONDITION once the order is final."""
    check_caller(request.tracking_token)
    check_instructions(request.instructions)
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row, actor = await locked_order_for_change(conn, request.order_id, request.tracking_token)
        if row["status"] in sm.FINAL:
            raise FailedPrecondition(
                f"instructions cannot change: the order is {sm.name(row['status'])}"
            )
        row, _ = await order_store.apply_change(
            conn,
            row,
            "instructions_updated",
            actor,
            changes={"instructions": message_json(request.instructions)},
            details={"instructions": message_json(request.instructions)},
        )
        touched = await route_versions.touch_orders(conn, [row["order_id"]])
    ctx.wake_outbox()
    order = order_store.order_message(row)
    await _tell_driver(ctx, row, order)
    await route_versions.push_current(ctx, touched, "instructions")
    return order


async def reschedule_order(
    ctx: DispatchContext, request: order_service_pb2.RescheduleOrderRequest
) -> dispatch_pb2.Order:
    """RescheduleOrder: INVALID_ARGUMENT for a window in the past, FAILED_PRECONDITION once
    picked up or final, or for a window beyond the reschedule horizon (not available)."""
    check_caller(request.tracking_token)
    start, end = window_bounds(
        request.drop_off_window, "drop_off_window", request.HasField("drop_off_window")
    )
    if start is None or end is None:
        raise InvalidArgument("drop_off_window is required")
    current = now()
    if end <= current:
        raise InvalidArgument("drop_off_window is in the past")
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row, actor = await locked_order_for_change(conn, request.order_id, request.tracking_token)
        status = row["status"]
        if status in sm.FINAL or status in sm.CARRIED:
            raise FailedPrecondition(f"too late to reschedule: the order is {sm.name(status)}")
        if start > current + dt.timedelta(seconds=ctx.settings.reschedule_horizon_s):
            raise FailedPrecondition(
                "that window is not available: it starts beyond the"
                f" {ctx.settings.reschedule_horizon_s // 86400}-day reschedule horizon"
            )
        row, _ = await reschedule_row(ctx, conn, row, actor, start, end, "rescheduled", {})
        left = await route_versions.remove_orders(ctx, conn, [row["order_id"]])
    ctx.wake_outbox()
    order = order_store.order_message(row)
    await _tell_driver(ctx, row, order)
    await route_versions.push_current(ctx, left, "rescheduled")
    return order


async def reschedule_row(
    ctx: DispatchContext,
    conn: Conn,
    row: Row,
    actor: Actor,
    start: dt.datetime,
    end: dt.datetime,
    event_type: str,
    details: dict[str, object],
    extra_changes: dict[str, object] | None = None,
) -> tuple[Row, dispatch_pb2.OrderEvent]:
    """Move a locked order to RESCHEDULED with a new window (an event only if it already
    is); the tracking link lives until the new window ends plus the grace."""
    to_status = None if row["status"] == sm.RESCHEDULED else sm.RESCHEDULED
    changes: dict[str, object] = {
        **(extra_changes or {}),
        "drop_off_start": start,
        "drop_off_end": end,
        "tracking_token_expires_at": end
        + dt.timedelta(seconds=ctx.settings.tracking_token_grace_s),
    }
    details = {**details, "window_start": start.isoformat(), "window_end": end.isoformat()}
    return await order_store.apply_change(conn, row, event_type, actor, to_status, changes, details)


async def _tell_driver(ctx: DispatchContext, row: Row, order: dispatch_pb2.Order) -> None:
    """Push the new instructions and window to the assigned driver (live fan-out)."""
    if not row["driver_id"]:
        return
    change = driver_pb2.InstructionChange(order_id=order.order_id)
    change.instructions.CopyFrom(order.instructions)
    if order.HasField("drop_off_window"):
        change.window.CopyFrom(order.drop_off_window)
    command = driver_service_pb2.ConnectResponse(instruction_change=change)
    await send_command(ctx.bus, row["driver_id"], command)
