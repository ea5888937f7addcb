"""What pod reads of an order (read-only: dispatch owns orders) and who may act on it.

Drivers asking about an order that is not theirs get PERMISSION_DENIED whether or not the
order exists, with the same message: a driver cannot probe for other drivers' orders.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lastmile.common.v1 import common_pb2

from core.auth import Principal, tracking_token_digest
from core.errors import FailedPrecondition, PermissionDenied
from core.geo import LatLng

if TYPE_CHECKING:
    from core.db import Conn

#: Statuses in which the driver holds the parcel at or near the door: a proof may deliver it.
DELIVERABLE = frozenset({common_pb2.ORDER_STATUS_PICKED_UP, common_pb2.ORDER_STATUS_NEARBY})

_COLUMNS = (
    "order_id, tenant_id, driver_id, status, attempt, drop_off_lat, drop_off_lng,"
    " delivery_code_digest, tracking_token_digest, tracking_token_expires_at,"
    " tracking_token_revoked"
)


@dataclass(frozen=True, slots=True)
class OrderView:
    """The columns of an order that proofs depend on."""

    order_id: str
    tenant_id: str
    driver_id: str
    status: int
    attempt: int
    drop_off: LatLng
    delivery_code_digest: str
    tracking_token_digest: str
    tracking_token_expires_at: dt.datetime | None
    tracking_token_revoked: bool


async def fetch_order(conn: Conn, order_id: str) -> OrderView | None:
    """The order, None when there is none."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1", order_id)
    if row is None:
        return None
    return OrderView(
        order_id=row["order_id"],
        tenant_id=row["tenant_id"],
        driver_id=row["driver_id"] or "",
        status=row["status"],
        attempt=row["attempt"],
        drop_off=LatLng(lat=row["drop_off_lat"], lng=row["drop_off_lng"]),
        delivery_code_digest=row["delivery_code_digest"],
        tracking_token_digest=row["tracking_token_digest"],
        tracking_token_expires_at=row["tracking_token_expires_at"],
        tracking_token_revoked=row["tracking_token_revoked"],
    )


def drivers_order(order: OrderView | None, principal: Principal, order_id: str) -> OrderView:
    """The order if it is assigned to the calling driver; PERMISSION_DENIED otherwise."""
    if (
        order is None
        or order.driver_id != principal.subject
        or order.tenant_id != principal.tenant_id
    ):
        raise PermissionDenied(f"order {order_id!r} is not assigned to you")
    return order


def require_deliverable(order: OrderView) -> None:
    """FAILED_PRECONDITION unless the order is picked up (or nearby) and not yet delivered."""
    if order.status not in DELIVERABLE:
        status = common_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
        raise FailedPrecondition(
            f"order {order.order_id!r} is {status}: a proof needs it PICKED_UP or NEARBY"
        )


def customer_may_see(order: OrderView, tracking_token: str, now: dt.datetime) -> bool:
    """Whether ``tracking_token`` is this order's live tracking link."""
    if order.tracking_token_revoked:
        return False
    expires = order.tracking_token_expires_at
    if expires is not None and expires <= now:
        return False
    return hmac.compare_digest(tracking_token_digest(tracking_token), order.tracking_token_digest)
