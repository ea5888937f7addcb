"""The orders repository: rows to messages, reads, and the one way an order changes.

Every change goes through :func:`apply_change`, inside the caller's transaction, on a row
locked with ``SELECT ... FOR UPDATE``: it checks the transition, updates the order, appends
the next ``order_events`` row (sequence per order) and an ``outbox`` row carrying the same
event, all committed together. The outbox relay publishes it afterwards (dispatch.outbox).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from core import topics
from core.errors import NotFound
from dispatch import state_machine as sm
from dispatch.convert import message_from_json, to_timestamp, window_of

if TYPE_CHECKING:
    from core.db import Conn

Row = Mapping[str, Any]
# Columns a change may set besides status (a fixed list: names are never interpolated from
# client input).
CHANGEABLE = frozenset(
    {
        "driver_id",
        "route_id",
        "instructions",
        "drop_off_start",
        "drop_off_end",
        "attempt",
        "last_failure_reason",
        "delivered_at",
        "tracking_token_expires_at",
        "fleet",
        "provider_id",
        "split_explanation",
        "provider_external_id",
        "provider_status",
        # An origin's rejection moves the order to a fallback origin (dispatch.origin_reroute).
        "origin_id",
        "pickup_address",
        "pickup_lat",
        "pickup_lng",
        "area_id",
    }
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who causes a change: ``dispatcher:<id>``, ``driver:<id>``, ``customer``, ``system``,
    ``provider:<id>``."""

    label: str


SYSTEM = Actor("system")
CUSTOMER = Actor("customer")


async def fetch_order(conn: Conn, tenant_id: str, order_id: str, lock: bool = False) -> Row:
    """The order row of the tenant; NotFound otherwise (other tenants' orders look absent)."""
    row = await conn.fetchrow(
        "SELECT * FROM orders WHERE order_id = $1 AND tenant_id = $2"
        + (" FOR UPDATE" if lock else ""),
        order_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"order {order_id!r} not found")
    return dict(row)


async def fetch_order_any_tenant(conn: Conn, order_id: str, lock: bool = False) -> Row | None:
    """The order row whatever its tenant (bus consumers and provider callbacks)."""
    row = await conn.fetchrow(
        "SELECT * FROM orders WHERE order_id = $1" + (" FOR UPDATE" if lock else ""), order_id
    )
    return dict(row) if row else None


async def apply_change(
    conn: Conn,
    row: Row,
    event_type: str,
    actor: Actor,
    to_status: int | None = None,
    changes: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
) -> tuple[Row, dispatch_pb2.OrderEvent]:
    """Change a locked order row (see the module docstring); returns the new row and event.

    ``to_status`` None records an event without a transition (instructions changed, window
    moved); otherwise the transition must be legal.
    """
    current = int(row["status"])
    target = current if to_status is None else to_status
    if to_status is not None:
        sm.check_transition(current, target)  # refuses self-transitions too
    sets = dict(changes or {})
    unknown = set(sets) - CHANGEABLE
    if unknown:
        raise ValueError(f"columns not changeable: {sorted(unknown)}")
    sequence = int(row["last_sequence"]) + 1
    columns = ["status", "last_sequence", *sets]
    values = [target, sequence, *sets.values()]
    assignments = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
    updated = await conn.fetchrow(
        f"UPDATE orders SET {assignments}, updated_at = now() WHERE order_id = $1 RETURNING *",
        row["order_id"],
        *values,
    )
    assert updated is not None  # the row is locked by the caller
    event = await insert_event(
        conn, dict(updated), sequence, event_type, current, target, actor, details or {}
    )
    return dict(updated), event


async def insert_event(
    conn: Conn,
    row: Row,
    sequence: int,
    event_type: str,
    from_status: int,
    to_status: int,
    actor: Actor,
    details: Mapping[str, Any],
) -> dispatch_pb2.OrderEvent:
    """Append the event to the order's log and to the outbox (same transaction)."""
    details_json = json.dumps(dict(details), sort_keys=True)
    at = await conn.fetchval(
        "INSERT INTO order_events (order_id, sequence, event_type, from_status, to_status,"
        " actor, details) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING at",
        row["order_id"],
        sequence,
        event_type,
        from_status,
        to_status,
        actor.label,
        details_json,
    )
    event = dispatch_pb2.OrderEvent(
        sequence=sequence,
        order_id=row["order_id"],
        event_type=event_type,
        from_status=from_status,  # type: ignore[arg-type]
        to_status=to_status,  # type: ignore[arg-type]
        at=to_timestamp(at),
        actor=actor.label,
        details_json=details_json,
    )
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload, tenant_id) VALUES ($1, $2, $3, $4)",
        topics.ORDER_EVENTS,
        row["order_id"],
        event.SerializeToString(),
        row["tenant_id"],
    )
    return event


def order_message(row: Row) -> dispatch_pb2.Order:
    """The Order message of a row (never carries the tracking token: only its digest is
    stored)."""
    order = dispatch_pb2.Order(
        order_id=row["order_id"],
        tenant_id=row["tenant_id"],
        external_ref=row["external_ref"],
        kind=row["kind"],
        status=row["status"],
        origin_id=row["origin_id"] or "",
        size_units=row["size_units"],
        customer_name=row["customer_name"],
        customer_phone=row["customer_phone"],
        driver_id=row["driver_id"] or "",
        route_id=row["route_id"] or "",
        fleet=row["fleet"],
        provider_id=row["provider_id"] or "",
        attempt=row["attempt"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
        delivered_at=to_timestamp(row["delivered_at"]),
        last_failure_reason=row["last_failure_reason"],
    )
    message_from_json(row["pickup_address"], order.pickup_address)
    message_from_json(row["drop_off_address"], order.drop_off_address)
    message_from_json(row["instructions"], order.instructions)
    order.pickup_address.location.CopyFrom(
        common_pb2.LatLng(lat=row["pickup_lat"], lng=row["pickup_lng"])
    )
    order.drop_off_address.location.CopyFrom(
        common_pb2.LatLng(lat=row["drop_off_lat"], lng=row["drop_off_lng"])
    )
    pickup = window_of(row["pickup_start"], row["pickup_end"])
    if pickup is not None:
        order.pickup_window.CopyFrom(pickup)
    drop_off = window_of(row["drop_off_start"], row["drop_off_end"])
    if drop_off is not None:
        order.drop_off_window.CopyFrom(drop_off)
    return order


def event_message(row: Row) -> dispatch_pb2.OrderEvent:
    """The OrderEvent of an ``order_events`` row."""
    details = row["details"]
    return dispatch_pb2.OrderEvent(
        sequence=row["sequence"],
        order_id=row["order_id"],
        event_type=row["event_type"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        at=to_timestamp(row["at"]),
        actor=row["actor"],
        details_json=details if isinstance(details, str) else json.dumps(details),
    )


async def list_events(conn: Conn, tenant_id: str, order_id: str) -> list[dispatch_pb2.OrderEvent]:
    """The order's history, oldest first; NotFound for an unknown order."""
    await fetch_order(conn, tenant_id, order_id)
    rows = await conn.fetch(
        "SELECT * FROM order_events WHERE order_id = $1 ORDER BY sequence", order_id
    )
    return [event_message(r) for r in rows]
