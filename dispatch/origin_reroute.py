"""Rejections: RejectOrder, and the reject answer policy for a silent origin.

The rejecting origin's fallbacks are tried by :func:`dispatch.origin_rules.reroute`. Rerouted,
the order gets two events: ``origin_rejected`` (the decision, with the reason and the
explanation; back to PENDING without driver when one had it) and ``origin_rerouted`` (the
new origin, its pickup address and position, and a new split by the provider rules engine
for that pickup), and a new PENDING decision at the fallback. Not rerouted, one event
``origin_rejected`` cancels it (details ``reason: origin_rejected``): customers see the
CANCELLED status like any other. An order with an external provider that already took it,
or one a driver is at the origin for, is not moved: it ends.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.origin.v1 import origin_pb2

from core.auth import Principal
from core.driver_commands import send_command
from core.errors import FailedPrecondition
from dispatch import areas, order_store, origin_rules, origin_view, route_versions
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Row
from dispatch.origin_orders import Locked, check_before_pickup, lock
from dispatch.origin_rules import PENDING, REJECTED
from dispatch.tracking_links import ended_changes

if TYPE_CHECKING:
    from core.db import Conn

#: Statuses from which a rejected order can move to another origin (back to PENDING).
MOVABLE = frozenset({sm.PENDING, sm.OFFERED, sm.ASSIGNED, sm.TO_PICKUP, sm.RESCHEDULED})
REASON_ENDED = "origin_rejected"


async def reject(
    ctx: DispatchContext, principal: Principal, order_id: str, reason: str
) -> origin_pb2.OriginOrder:
    """RejectOrder: a PENDING order is rerouted or ends (see the module docstring)."""
    text = origin_rules.check_reason(reason)
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = await lock(conn, principal, order_id)
        decision = locked.decision["decision"]
        if decision != PENDING:
            name = origin_pb2.OriginDecision.Name(decision).removeprefix("ORIGIN_DECISION_")
            raise FailedPrecondition(
                f"cannot reject: the order is {name} (after accepting, a dispatcher cancels it)"
            )
        check_before_pickup(locked.order)
        withdrawn_from = await reject_locked(ctx, conn, locked, text, "origin")
        rejecting = str(locked.decision["origin_id"])
        answer = await origin_view.current(
            conn, principal.tenant_id, order_id, watched=rejecting, reason=text
        )
    ctx.wake_outbox()
    await tell_driver(ctx, withdrawn_from, order_id)
    return answer


async def reject_locked(
    ctx: DispatchContext, conn: Conn, locked: Locked, reason: str, answered_by: str
) -> str:
    """Record the rejection and reroute or end the order; returns the driver who lost it
    ("" for none), to be told after the commit."""
    order, rejecting = locked.order, str(locked.decision["origin_id"])
    fallbacks = await conn.fetchval(
        "SELECT fallback_origin_ids FROM origins WHERE origin_id = $1", rejecting
    )
    candidates = await conn.fetch(
        "SELECT origin_id, closed FROM origins WHERE tenant_id = $1 AND origin_id = ANY($2)",
        order["tenant_id"],
        list(fallbacks or []),
    )
    rejected_by = [*locked.decision["rejected_by"], rejecting]
    outcome = origin_rules.reroute(
        rejecting,
        list(fallbacks or []),
        {r["origin_id"]: r["closed"] for r in candidates},
        rejected_by,
    )
    details: dict[str, Any] = {
        "origin_id": rejecting,
        "origin_reason": reason,
        "answered_by": answered_by,
        "explanation": outcome.explanation,
    }
    movable = order["status"] in MOVABLE and not order["provider_external_id"]
    driver = str(order["driver_id"] or "")
    if outcome.origin_id and movable:
        await _reroute(ctx, conn, locked, outcome.origin_id, rejected_by, details)
        return driver if order["status"] != sm.PENDING else ""
    if outcome.origin_id:  # a fallback was there, but the order cannot move: it ends
        why = (
            f"provider {order['provider_id']} has it"
            if order["provider_external_id"]
            else f"the order is {sm.name(order['status'])}"
        )
        details["explanation"] += f"; not moved ({why}): cancelled (origin_rejected)"
    await conn.execute(
        "UPDATE origin_orders SET decision = $2, reject_reason = $3, rejected_by = $4,"
        " answered_at = now(), answer_due_at = NULL, updated_at = now() WHERE order_id = $1",
        order["order_id"],
        REJECTED,
        reason,
        rejected_by,
    )
    details.update(reason=REASON_ENDED, outcome="cancelled")
    await order_store.apply_change(
        conn,
        order,
        "origin_rejected",
        locked.actor,
        to_status=sm.CANCELLED,
        changes=ended_changes(ctx.settings),  # the tracking link ends with the order
        details=details,
    )
    return driver


async def _reroute(
    ctx: DispatchContext,
    conn: Conn,
    locked: Locked,
    target: str,
    rejected_by: list[str],
    details: dict[str, Any],
) -> None:
    order = locked.order
    details.update(outcome="rerouted", rerouted_to=target)
    unassign = order["status"] != sm.PENDING
    order, _ = await order_store.apply_change(
        conn,
        order,
        "origin_rejected",
        locked.actor,
        to_status=sm.PENDING if unassign else None,
        changes={"driver_id": None, "route_id": None} if unassign else None,
        details=details,
    )
    origin = await conn.fetchrow("SELECT * FROM origins WHERE origin_id = $1", target)
    assert origin is not None  # chosen among the tenant's origins, in this transaction
    pickup = areas.Pickup(origin["lat"], origin["lng"], origin["area_id"])
    split = await areas.decide_split(
        conn, order["tenant_id"], order["order_id"], order["kind"], pickup
    )
    due = now() + dt.timedelta(seconds=ctx.settings.origin_answer_timeout_s)
    await conn.execute(
        "UPDATE origin_orders SET origin_id = $2, decision = $3, preparation_s = NULL,"
        " ready_at = NULL, reject_reason = '', rejected_by = $4, answer_due_at = $5,"
        " received_at = now(), answered_at = NULL, ready_marked_at = NULL, updated_at = now()"
        " WHERE order_id = $1",
        order["order_id"],
        target,
        PENDING,
        rejected_by,
        due,
    )
    await order_store.apply_change(
        conn,
        order,
        "origin_rerouted",
        locked.actor,
        changes=_pickup_changes(origin, split),
        details={
            "origin_id": target,
            "from_origin_id": details["origin_id"],
            "fleet": split.fleet,
            "provider_id": split.provider_id,
            "explanation": split.explanation,
        },
    )


def _pickup_changes(origin: Row, split: Any) -> dict[str, Any]:
    """The order's new pickup: the fallback origin's address and position, its area and
    the rules engine's split for it."""
    return {
        "origin_id": origin["origin_id"],
        "pickup_address": origin["address"],
        "pickup_lat": origin["lat"],
        "pickup_lng": origin["lng"],
        "area_id": split.area_id or None,
        "fleet": split.fleet,
        "provider_id": split.provider_id or None,
        "split_explanation": split.explanation,
    }


async def tell_driver(ctx: DispatchContext, driver_id: str, order_id: str) -> None:
    """The driver who had the order is told it left their list, and gets the route version
    without its stops (after the rejection's commit: a crash in between leaves the stops on
    the route until its next version, the order itself is already moved or ended)."""
    if not driver_id:
        return
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        left = await route_versions.remove_orders(ctx, conn, [order_id])
    await route_versions.push_current(ctx, left, "cancelled")
    cancelled = driver_pb2.OrderCancelled(order_id=order_id, reason=REASON_ENDED)
    await send_command(
        ctx.bus, driver_id, driver_service_pb2.ConnectResponse(order_cancelled=cancelled)
    )
