"""Moving an order forward on a report from the field (driver app, geofence, external
provider): walk the legal transitions up to the reported status, each one an event.

Reports are replayed after crashes and may arrive late, so a report the order is already at
or past is skipped, not refused; a report carrying a ``dedupe`` key already recorded for the
order is skipped too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from dispatch import order_store, route_store
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Actor

log = logging.getLogger(__name__)


async def already_recorded(conn: Any, order_id: str, dedupe: str) -> bool:
    """Whether an event of the order carries this dedupe key."""
    found = await conn.fetchval(
        "SELECT 1 FROM order_events WHERE order_id = $1 AND details->>'dedupe' = $2",
        order_id,
        dedupe,
    )
    return found is not None


async def advance(
    ctx: DispatchContext,
    order_id: str,
    target: int,
    actor: Actor,
    *,
    only_from: frozenset[int] | None = None,
    driver_id: str | None = None,
    dedupe: str = "",
    details: Mapping[str, Any] | None = None,
) -> bool:
    """Walk the order forward to ``target``; returns whether anything changed.

    ``only_from``: apply only when the order is in one of these statuses. ``driver_id``:
    apply only to an order assigned to that driver (a driver speaks for its own orders).
    """
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
        if row is None:
            log.info("report for an unknown order skipped", extra={"order_id": order_id})
            return False
        if driver_id is not None and row["driver_id"] != driver_id:
            log.info("report by a driver not assigned skipped", extra={"order_id": order_id})
            return False
        if only_from is not None and row["status"] not in only_from:
            return False
        if dedupe and await already_recorded(conn, order_id, dedupe):
            return False
        if target in sm.PROGRESS:
            path = sm.forward_path(row["status"], target)
        else:  # FAILED and other side steps: only as a direct, legal transition
            path = [target] if sm.allowed(row["status"], target) else None
        if not path:
            return False
        extra = {**(details or {}), **({"dedupe": dedupe} if dedupe else {})}
        for step in path:
            changes: dict[str, Any] = {}
            if step == sm.DELIVERED:
                delivered = now()
                changes["delivered_at"] = delivered
                changes["tracking_token_expires_at"] = delivered + dt.timedelta(
                    seconds=ctx.settings.tracking_token_grace_s
                )
            row, _ = await order_store.apply_change(
                conn, row, sm.name(step).lower(), actor, step, changes, extra
            )
        await route_store.complete_order_stops(conn, order_id, passed_stops(row["status"]))
    ctx.wake_outbox()
    return True


def passed_stops(status: int) -> tuple[int, ...]:
    """Kinds of the order's route stops the driver is past once the order is at ``status``
    (marked completed, so later route versions do not send the driver back there)."""
    if status == sm.DELIVERED:
        return (route_store.PICKUP, route_store.DROP_OFF)
    if status in (sm.PICKED_UP, sm.NEARBY):
        return (route_store.PICKUP,)
    return ()
