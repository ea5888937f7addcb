"""Orders as an origin sees them (``lastmile.origin.v1.OriginOrder``): the order, the origin's
decision, the driver once assigned and when it is expected at the origin.

The driver's ETA at the origin comes from what dispatch planned: the pickup stop's planned
arrival on the driver's route (waves), else the arrival the instant matcher computed for the
offer the driver accepted (the ``offered`` event: its time plus ``arrival_s`` for the order,
or ``pickup_s`` in events written before there was one). Nothing known: no ETA.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import route_pb2
from lastmile.origin.v1 import origin_pb2

from dispatch import origin_rules
from dispatch import state_machine as sm
from dispatch.convert import to_timestamp
from dispatch.order_store import Row

if TYPE_CHECKING:
    from core.db import Conn

#: Statuses in which the origin sees the driver (committed to the order).
DRIVER_SHOWN = frozenset(
    {sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP, sm.PICKED_UP, sm.NEARBY, sm.DELIVERED, sm.FAILED}
)
#: Statuses in which the driver is still on the way to the origin (an ETA is useful).
ON_THE_WAY = frozenset({sm.ASSIGNED, sm.TO_PICKUP})
#: Statuses of open orders, replayed first by WatchOriginOrders (the origin still has work).
OPEN = frozenset({sm.PENDING, sm.OFFERED, sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP})

_VIEW = (
    "SELECT o.order_id, o.external_ref, o.status, coalesce(o.origin_id, '') AS origin_id,"
    " o.driver_id, o.created_at, coalesce(d.name, '') AS driver_name, oo.decision,"
    " oo.ready_at, oo.preparation_s, oo.reject_reason, oo.answer_due_at, oo.received_at"
    " FROM orders o LEFT JOIN origin_orders oo ON oo.order_id = o.order_id"
    " LEFT JOIN drivers d ON d.driver_id = o.driver_id"
)


async def rows_by_id(conn: Conn, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Row]:
    """View rows of the tenant's orders among ``order_ids``."""
    rows = await conn.fetch(
        _VIEW + " WHERE o.order_id = ANY($1::text[]) AND o.tenant_id = $2",
        list(order_ids),
        tenant_id,
    )
    return {r["order_id"]: dict(r) for r in rows}


async def open_rows(conn: Conn, tenant_id: str, origin_id: str, limit: int) -> list[Row]:
    """The origin's open orders (see :data:`OPEN`) it has not rejected, oldest first."""
    rows = await conn.fetch(
        _VIEW + " WHERE oo.origin_id = $1 AND o.tenant_id = $2 AND oo.decision <> $3"
        " AND o.status = ANY($4::smallint[]) ORDER BY oo.received_at, o.order_id LIMIT $5",
        origin_id,
        tenant_id,
        origin_rules.REJECTED,
        sorted(OPEN),
        limit,
    )
    return [dict(r) for r in rows]


async def driver_etas(conn: Conn, rows: Sequence[Row]) -> dict[str, dt.datetime]:
    """When the driver of each order on its way is expected at the origin, where known."""
    wanted = [r["order_id"] for r in rows if r["driver_id"] and r["status"] in ON_THE_WAY]
    if not wanted:
        return {}
    etas: dict[str, dt.datetime] = {}
    offers = await conn.fetch(
        "SELECT DISTINCT ON (e.order_id) e.order_id, e.at, e.details FROM order_events e"
        " JOIN orders o ON o.order_id = e.order_id WHERE e.order_id = ANY($1::text[])"
        " AND e.event_type = 'offered' AND e.details->>'driver_id' = o.driver_id"
        " ORDER BY e.order_id, e.sequence DESC",
        wanted,
    )
    for offer in offers:
        seconds = _arrival_s(offer["order_id"], offer["details"])
        if seconds is not None:
            etas[offer["order_id"]] = offer["at"] + dt.timedelta(seconds=seconds)
    planned = await conn.fetch(
        "SELECT s.order_id, s.planned_arrival FROM route_stops s JOIN orders o"
        " ON o.order_id = s.order_id AND o.route_id = s.route_id"
        " WHERE s.order_id = ANY($1::text[]) AND s.kind = $2 AND s.planned_arrival IS NOT NULL",
        wanted,
        route_pb2.STOP_KIND_PICKUP,
    )
    for stop in planned:  # a route is the newer plan than an offer
        etas[stop["order_id"]] = stop["planned_arrival"]
    return etas


def _arrival_s(order_id: str, raw: Any) -> float | None:
    details: Mapping[str, Any] = json.loads(raw) if isinstance(raw, str) else (raw or {})
    arrivals = details.get("arrival_s")
    if isinstance(arrivals, dict) and isinstance(arrivals.get(order_id), int | float):
        return float(arrivals[order_id])
    pickup = details.get("pickup_s")
    return float(pickup) if isinstance(pickup, int | float) else None


def message(
    row: Row,
    watched: str = "",
    change: str = "",
    eta: dt.datetime | None = None,
    reason: str = "",
) -> origin_pb2.OriginOrder:
    """The OriginOrder of a view row for origin ``watched`` (empty: the order's current
    origin). An order that left ``watched`` (it rejected it and the order was rerouted) is
    REJECTED for it, with ``reason`` (the rejection's) when the row has none."""
    mine = not watched or row["origin_id"] == watched
    decision = (row["decision"] or 0) if mine else origin_rules.REJECTED
    result = origin_pb2.OriginOrder(
        order_id=row["order_id"],
        external_ref=row["external_ref"],
        decision=decision,  # type: ignore[arg-type]
        status=row["status"],
        origin_id=row["origin_id"],
        change=change,
        reject_reason=(row["reject_reason"] or reason) if mine else reason,
        created_at=to_timestamp(row["created_at"]),
    )
    if mine:
        _decision_fields(result, row)
    if row["driver_id"] and row["status"] in DRIVER_SHOWN:
        result.driver_name = row["driver_name"]
        if eta is not None:
            result.driver_eta.FromDatetime(eta)
    return result


def _decision_fields(result: origin_pb2.OriginOrder, row: Row) -> None:
    if row["ready_at"] is not None:
        result.ready_at.FromDatetime(row["ready_at"])
    if row["preparation_s"] is not None:
        result.preparation.CopyFrom(Duration(seconds=row["preparation_s"]))
    if row["decision"] == origin_rules.PENDING and row["answer_due_at"] is not None:
        result.answer_by.FromDatetime(row["answer_due_at"])


async def current(
    conn: Conn, tenant_id: str, order_id: str, watched: str = "", reason: str = ""
) -> origin_pb2.OriginOrder:
    """The order as ``watched`` (default: its current origin) sees it now (the decision RPCs'
    answer)."""
    row = (await rows_by_id(conn, tenant_id, [order_id]))[order_id]
    etas = await driver_etas(conn, [row])
    return message(row, watched, eta=etas.get(order_id), reason=reason)
