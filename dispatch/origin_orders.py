"""Origins' decisions on their orders: AcceptOrder, SetPreparationTime, MarkReady (rejections
are in dispatch.origin_reroute), stored in ``origin_orders`` and each written as an order
event through ``order_store.apply_change`` (history, outbox, WatchOrders,
WatchOriginOrders).

Rules (the contract says the same):

- a new order with an origin starts PENDING, answered by the answer policy at
  ``answer_due_at`` if the origin stays silent (dispatch.origin_timeouts);
- AcceptOrder: PENDING -> ACCEPTED, ``ready_at = now + preparation`` (default: the origin's
  ``default_preparation``); again on an ACCEPTED or READY order: nothing changes;
- SetPreparationTime: ACCEPTED only, ``ready_at = now + preparation``;
- MarkReady: ACCEPTED -> READY, ``ready_at = now``; again on READY: nothing changes. Accept
  first: accepting is the origin's commitment and carries the preparation time;
- every decision only before pickup (FAILED_PRECONDITION once picked up, cancelled, ...).

Only ACCEPTED and READY orders are dispatched (:data:`DISPATCHABLE_SQL`), and no pickup is
planned before ``ready_at`` (:data:`READY_AT_SQL`, :func:`pickup_bounds`).

Locks: the order row first, then its ``origin_orders`` row, everywhere (no deadlocks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration
from lastmile.origin.v1 import origin_pb2

from core.auth import Principal, Role
from core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from core.settings import Settings
from dispatch import order_store, origin_rules, origin_view
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Actor, Row
from dispatch.origin_rules import ACCEPTED, DISPATCHABLE, PENDING, READY, REJECTED

if TYPE_CHECKING:
    from core.db import Conn

#: Order statuses in which its origin may still decide (nothing picked up, not final).
BEFORE_PICKUP = frozenset(
    {sm.PENDING, sm.OFFERED, sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP, sm.RESCHEDULED}
)
#: SQL condition on ``orders o``: no origin, or its origin accepted it (dispatch may plan it).
DISPATCHABLE_SQL = (
    "NOT EXISTS (SELECT 1 FROM origin_orders oo WHERE oo.order_id = o.order_id"
    f" AND oo.decision NOT IN ({ACCEPTED}, {READY}))"
)
#: SQL expression on ``orders o``: when its origin expects it ready (NULL: no origin time).
READY_AT_SQL = "(SELECT oo.ready_at FROM origin_orders oo WHERE oo.order_id = o.order_id)"


@dataclass(frozen=True, slots=True)
class Locked:
    """An order and its decision row, both locked, and who is acting on them."""

    order: Row
    decision: Row
    actor: Actor


async def open_decision(conn: Conn, settings: Settings, order: Row) -> None:
    """A PENDING decision for a new order with an origin (in the creating transaction)."""
    await conn.execute(
        "INSERT INTO origin_orders (order_id, tenant_id, origin_id, decision, answer_due_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        order["order_id"],
        order["tenant_id"],
        order["origin_id"],
        PENDING,
        now() + dt.timedelta(seconds=settings.origin_answer_timeout_s),
    )


async def lock(conn: Conn, principal: Principal, order_id: str) -> Locked:
    """The order and its decision, locked, if the caller may decide on it: its origin (an
    origin token naming it), or staff of the tenant. NOT_FOUND for an unknown order,
    PERMISSION_DENIED for another origin's, FAILED_PRECONDITION for an order without origin
    or one the calling origin rejected (it is with a fallback now)."""
    if not order_id:
        raise InvalidArgument("order_id is required")
    order = await order_store.fetch_order(conn, principal.tenant_id, order_id, lock=True)
    decision = await conn.fetchrow(
        "SELECT * FROM origin_orders WHERE order_id = $1 FOR UPDATE", order_id
    )
    if principal.role == Role.ORIGIN:
        origin_id = principal.subject
        if decision is None or (
            decision["origin_id"] != origin_id and origin_id not in decision["rejected_by"]
        ):
            raise PermissionDenied(f"order {order_id!r} is not an order of origin {origin_id!r}")
        if decision["origin_id"] != origin_id:
            raise FailedPrecondition(
                f"origin {origin_id!r} rejected order {order_id!r}; it went to a fallback origin"
            )
    elif decision is None:
        raise FailedPrecondition(f"order {order_id!r} has no origin to decide on it")
    return Locked(order, dict(decision), Actor(f"{principal.role.value}:{principal.subject}"))


def check_before_pickup(order: Row) -> None:
    """FAILED_PRECONDITION once the order is picked up or final."""
    if order["status"] not in BEFORE_PICKUP:
        raise FailedPrecondition(
            f"the order is {sm.name(order['status'])}: origins decide only before pickup"
        )


def _refuse_unless(decision: int, wanted: int, what: str) -> None:
    if decision == wanted:
        return
    if decision == PENDING:
        raise FailedPrecondition(f"{what}: accept the order first (AcceptOrder)")
    if decision == REJECTED:
        raise FailedPrecondition(f"{what}: the order was rejected")
    if decision == READY:
        raise FailedPrecondition(f"{what}: the order is ready already")
    raise FailedPrecondition(f"{what}: the order is {origin_pb2.OriginDecision.Name(decision)}")


async def _update(conn: Conn, order_id: str, **values: Any) -> None:
    """Set decision columns (fixed names from this module, never client input)."""
    names = list(values)
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    await conn.execute(
        f"UPDATE origin_orders SET {sets}, updated_at = now() WHERE order_id = $1",
        order_id,
        *values.values(),
    )


def _details(locked: Locked, **more: Any) -> dict[str, Any]:
    return {"origin_id": locked.decision["origin_id"], **more}


async def accept_locked(conn: Conn, locked: Locked, prep_s: int | None, answered_by: str) -> None:
    """PENDING -> ACCEPTED with ``prep_s`` (None: the origin's default preparation)."""
    if prep_s is None:
        prep_s = int(
            await conn.fetchval(
                "SELECT default_preparation_s FROM origins WHERE origin_id = $1",
                locked.decision["origin_id"],
            )
            or 0
        )
    ready_at = now() + dt.timedelta(seconds=prep_s)
    await _update(
        conn,
        locked.order["order_id"],
        decision=ACCEPTED,
        preparation_s=prep_s,
        ready_at=ready_at,
        answered_at=now(),
        answer_due_at=None,
    )
    details = _details(
        locked, preparation_s=prep_s, ready_at=ready_at.isoformat(), answered_by=answered_by
    )
    await order_store.apply_change(
        conn, locked.order, "origin_accepted", locked.actor, details=details
    )


async def accept(
    ctx: DispatchContext, principal: Principal, order_id: str, preparation: Duration | None
) -> origin_pb2.OriginOrder:
    """AcceptOrder (see the module docstring)."""
    settings = ctx.settings
    prep_s = (
        None
        if preparation is None
        else origin_rules.preparation_s(preparation, settings.origin_max_preparation_s)
    )
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = await lock(conn, principal, order_id)
        if locked.decision["decision"] not in DISPATCHABLE:
            _refuse_unless(locked.decision["decision"], PENDING, "cannot accept")
            check_before_pickup(locked.order)
            await accept_locked(conn, locked, prep_s, "origin")
        answer = await origin_view.current(conn, principal.tenant_id, order_id)
    ctx.wake_outbox()
    return answer


async def set_preparation(
    ctx: DispatchContext, principal: Principal, order_id: str, preparation: Duration | None
) -> origin_pb2.OriginOrder:
    """SetPreparationTime: a new ready_at for an ACCEPTED order."""
    if preparation is None:
        raise InvalidArgument("preparation is required")
    prep_s = origin_rules.preparation_s(preparation, ctx.settings.origin_max_preparation_s)
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = await lock(conn, principal, order_id)
        _refuse_unless(locked.decision["decision"], ACCEPTED, "cannot set the preparation time")
        check_before_pickup(locked.order)
        ready_at = now() + dt.timedelta(seconds=prep_s)
        await _update(conn, order_id, preparation_s=prep_s, ready_at=ready_at)
        details = _details(locked, preparation_s=prep_s, ready_at=ready_at.isoformat())
        await order_store.apply_change(
            conn, locked.order, "origin_preparation_set", locked.actor, details=details
        )
        answer = await origin_view.current(conn, principal.tenant_id, order_id)
    ctx.wake_outbox()
    return answer


async def mark_ready(
    ctx: DispatchContext, principal: Principal, order_id: str
) -> origin_pb2.OriginOrder:
    """MarkReady: ACCEPTED -> READY now (READY again: nothing changes)."""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = await lock(conn, principal, order_id)
        if locked.decision["decision"] != READY:
            _refuse_unless(locked.decision["decision"], ACCEPTED, "cannot mark ready")
            check_before_pickup(locked.order)
            ready_at = now()
            await _update(
                conn, order_id, decision=READY, ready_at=ready_at, ready_marked_at=ready_at
            )
            details = _details(locked, ready_at=ready_at.isoformat())
            await order_store.apply_change(
                conn, locked.order, "origin_ready", locked.actor, details=details
            )
        answer = await origin_view.current(conn, principal.tenant_id, order_id)
    ctx.wake_outbox()
    return answer


async def ready_for_planning(conn: Conn, orders: Mapping[str, Row], strict: bool) -> dict[str, Row]:
    """``orders`` (rows by id) with ``ready_at`` (their origin's, None without) added, those
    awaiting their origin's acceptance left out, or refused with FAILED_PRECONDITION when
    ``strict`` (orders named by the caller)."""
    rows = await conn.fetch(
        "SELECT order_id, decision, ready_at FROM origin_orders WHERE order_id = ANY($1::text[])",
        list(orders),
    )
    decided = {r["order_id"]: r for r in rows}
    result: dict[str, Row] = {}
    for order_id, row in orders.items():
        decision = decided.get(order_id)
        if decision is not None and decision["decision"] not in DISPATCHABLE:
            if strict:
                raise FailedPrecondition(
                    f"order {order_id!r} awaits its origin's acceptance: it is not planned yet"
                )
            continue
        result[order_id] = {**row, "ready_at": decision["ready_at"] if decision else None}
    return result


def pickup_bounds(order: Row) -> tuple[dt.datetime | None, dt.datetime | None]:
    """An order's pickup window for planning: it opens when the pickup window opens or the
    origin expects it ready, whichever is later; a ready time after the window's end moves
    the end to it (the food cannot leave before it is ready; late beats never)."""
    start, end, ready = order["pickup_start"], order["pickup_end"], order.get("ready_at")
    if ready is not None and (start is None or ready > start):
        start = ready
    if start is not None and end is not None and end < start:
        end = start
    return start, end
