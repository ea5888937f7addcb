"""A driver acts only on its own assignments: checks of the Connect events that name an order
or an offer, before they are enqueued.

- ``stop`` and ``failed_attempt`` name an order: it must be assigned to the calling driver
  (read from PostgreSQL's ``orders``, which dispatch owns; the gateway only reads it, as pod
  does). Whether the order does not exist or is someone else's, the refusal is the same
  PERMISSION_DENIED with the same message: a driver cannot probe for other orders.
- ``route_ack`` names a route: it must be the calling driver's (``routes``, dispatch's).
- ``offer_answer`` names an offer: an open offer made to another driver is refused with
  PERMISSION_DENIED. An offer that is gone (answered, expired) is let through: dispatch
  ignores answers to resolved offers, and refusing them would turn the harmless resend of an
  answer already accepted into an error.

Resends (a seq at or below the driver's last accepted one) are not checked: they are acked
as duplicates without being enqueued again, whatever happened to the order since.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from lastmile.driver.v1 import driver_service_pb2

from core.driver_commands import offer_key
from gateway.validation import Refusal

# google.rpc.Code of a Reject for an event about someone else's order or offer.
PERMISSION_DENIED = 7
CHECKED = frozenset({"stop", "failed_attempt", "offer_answer", "route_ack"})


def order_of(request: driver_service_pb2.ConnectRequest) -> str:
    """The order an event names ('' for events that name none)."""
    kind = request.WhichOneof("event")
    if kind == "stop":
        return request.stop.order_id
    if kind == "failed_attempt":
        return request.failed_attempt.order_id
    return ""


async def order_refusal(
    pool: asyncpg.Pool[Any], driver_id: str, tenant_id: str, order_id: str
) -> Refusal | None:
    """PERMISSION_DENIED unless the order is assigned to this driver of this tenant."""
    owner = await pool.fetchrow(
        "SELECT driver_id, tenant_id FROM orders WHERE order_id = $1", order_id
    )
    if owner is None or owner["driver_id"] != driver_id or owner["tenant_id"] != tenant_id:
        return Refusal(PERMISSION_DENIED, f"order {order_id!r} is not assigned to you")
    return None


async def route_refusal(
    pool: asyncpg.Pool[Any], driver_id: str, tenant_id: str, route_id: str
) -> Refusal | None:
    """PERMISSION_DENIED unless the route is this driver's (of this tenant)."""
    owner = await pool.fetchrow(
        "SELECT driver_id, tenant_id FROM routes WHERE route_id = $1", route_id
    )
    if owner is None or owner["driver_id"] != driver_id or owner["tenant_id"] != tenant_id:
        return Refusal(PERMISSION_DENIED, f"route {route_id!r} is not yours")
    return None


async def offer_refusal(redis: Any, driver_id: str, offer_id: str) -> Refusal | None:
    """PERMISSION_DENIED for an open offer made to another driver."""
    raw = await redis.get(offer_key(offer_id))
    if raw is None:
        return None
    try:
        offered_to = str(json.loads(raw).get("driver_id", ""))
    except (ValueError, AttributeError):
        offered_to = ""
    if offered_to != driver_id:
        return Refusal(PERMISSION_DENIED, f"offer {offer_id!r} was not made to you")
    return None


async def check_ownership(
    pool: asyncpg.Pool[Any],
    redis: Any,
    driver_id: str,
    tenant_id: str,
    request: driver_service_pb2.ConnectRequest,
) -> Refusal | None:
    """The refusal of an event about someone else's order or offer, None otherwise."""
    kind = request.WhichOneof("event")
    if kind == "offer_answer":
        return await offer_refusal(redis, driver_id, request.offer_answer.offer_id)
    if kind == "route_ack":
        return await route_refusal(pool, driver_id, tenant_id, request.route_ack.route_id)
    order_id = order_of(request)
    if order_id:
        return await order_refusal(pool, driver_id, tenant_id, order_id)
    return None
