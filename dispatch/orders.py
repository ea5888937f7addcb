"""Order use cases: create (idempotent, validated, split by the rules engine), read, list,
cancel. Customer changes live in dispatch.changes, failed attempts in dispatch.failures."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.auth import (
    Principal,
    delivery_code_digest,
    new_tracking_token,
    tracking_token_digest,
)
from core.driver_commands import send_command
from core.errors import AlreadyExists, InvalidArgument
from core.inputs import enum_values
from core.settings import Settings
from dispatch import areas, decisions, order_store, origin_orders, paging, route_versions
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import (
    check_access_notes,
    check_instructions,
    check_position,
    message_json,
    now,
    window_bounds,
)
from dispatch.decisions import fleet_name
from dispatch.order_store import Actor
from dispatch.tracking_links import ended_changes

MAX_IDEMPOTENCY_KEY = 200


def actor_of(principal: Principal) -> Actor:
    """The event actor for an authenticated caller."""
    return Actor(f"{principal.role.value}:{principal.subject}")


def request_digest(order: dispatch_pb2.Order) -> str:
    """SHA-256 of what the client asked for (server-set fields cleared), to tell a retry from
    another order reusing the same idempotency key."""
    content = dispatch_pb2.Order()
    content.CopyFrom(order)
    for name in ("order_id", "tenant_id", "status", "tracking_token", "driver_id", "route_id"):
        content.ClearField(name)
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def _check_create(request: order_service_pb2.CreateOrderRequest) -> None:
    if not request.idempotency_key:
        raise InvalidArgument("idempotency_key is required")
    if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY} chars")
    order = request.order
    if order.kind not in (dispatch_pb2.ORDER_KIND_INSTANT, dispatch_pb2.ORDER_KIND_PLANNED):
        raise InvalidArgument("order.kind must be INSTANT or PLANNED")
    if order.size_units < 0:
        raise InvalidArgument("order.size_units must not be negative")
    check_position(order.drop_off_address.location, "order.drop_off_address.location")
    if not order.origin_id:
        check_position(order.pickup_address.location, "order.pickup_address.location")
    check_instructions(order.instructions)
    check_access_notes(order.pickup_address, "order.pickup_address")
    check_access_notes(order.drop_off_address, "order.drop_off_address")


async def create_order(
    ctx: DispatchContext, principal: Principal, request: order_service_pb2.CreateOrderRequest
) -> order_service_pb2.CreateOrderResponse:
    """CreateOrder: see the contract. The tracking token and delivery code are returned by
    the creating call only (their digests are stored); a retry returns the order without
    them."""
    _check_create(request)
    order = request.order
    pickup_window = window_bounds(
        order.pickup_window, "order.pickup_window", order.HasField("pickup_window")
    )
    drop_start, drop_end = window_bounds(
        order.drop_off_window, "order.drop_off_window", order.HasField("drop_off_window")
    )
    if drop_end is not None and drop_end <= now():
        raise InvalidArgument("order.drop_off_window is in the past")
    digest = request_digest(order)
    order_id = "ord_" + uuid.uuid4().hex
    token, code = new_tracking_token(), f"{secrets.randbelow(10**6):06d}"
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchrow(
            "SELECT * FROM orders WHERE tenant_id = $1 AND idempotency_key = $2",
            principal.tenant_id,
            request.idempotency_key,
        )
        if existing is not None:
            return _replay(dict(existing), digest, request.idempotency_key)
        pickup = await areas.pickup_of(conn, principal.tenant_id, order)
        decision = await areas.decide_split(conn, principal.tenant_id, order_id, order.kind, pickup)
        decisions.record("split", fleet_name(decision.fleet))
        row = await conn.fetchrow(
            "INSERT INTO orders (order_id, tenant_id, idempotency_key, request_digest,"
            " external_ref, kind, status, origin_id, pickup_address, pickup_lat, pickup_lng,"
            " drop_off_address, drop_off_lat, drop_off_lng, pickup_start, pickup_end,"
            " drop_off_start, drop_off_end, instructions, size_units, customer_name,"
            " customer_phone, fleet, provider_id, area_id, split_explanation,"
            " tracking_token_digest, tracking_token_expires_at, delivery_code_digest,"
            " last_sequence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
            " $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, 1)"
            " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING *",
            order_id,
            principal.tenant_id,
            request.idempotency_key,
            digest,
            order.external_ref,
            order.kind,
            sm.PENDING,
            order.origin_id or None,
            message_json(order.pickup_address),
            pickup.lat,
            pickup.lng,
            message_json(order.drop_off_address),
            order.drop_off_address.location.lat,
            order.drop_off_address.location.lng,
            *pickup_window,
            drop_start,
            drop_end,
            message_json(order.instructions),
            order.size_units,
            order.customer_name,
            order.customer_phone,
            decision.fleet,
            decision.provider_id or None,
            decision.area_id or None,
            decision.explanation,
            tracking_token_digest(token),
            _token_expiry(ctx.settings, drop_end),
            delivery_code_digest(ctx.settings.delivery_code_secret, order_id, code),
        )
        if row is None:  # a concurrent retry with the same key committed first
            existing = await conn.fetchrow(
                "SELECT * FROM orders WHERE tenant_id = $1 AND idempotency_key = $2",
                principal.tenant_id,
                request.idempotency_key,
            )
            assert existing is not None
            return _replay(dict(existing), digest, request.idempotency_key)
        details = {
            "fleet": decision.fleet,
            "provider_id": decision.provider_id,
            "explanation": decision.explanation,
        }
        await order_store.insert_event(
            conn, dict(row), 1, "created", 0, sm.PENDING, actor_of(principal), details
        )
        if row["origin_id"]:  # its origin decides before it is dispatched
            await origin_orders.open_decision(conn, ctx.settings, dict(row))
    ctx.wake_outbox()
    message = order_store.order_message(row)
    message.tracking_token = token
    return order_service_pb2.CreateOrderResponse(
        order=message, split=_split_message(row), delivery_code=code
    )


def _replay(row: dict[str, Any], digest: str, key: str) -> order_service_pb2.CreateOrderResponse:
    if row["request_digest"] != digest:
        raise AlreadyExists(
            f"idempotency key {key!r} was already used for order {row['order_id']} with"
            " different content; use a new key for a new order"
        )
    return order_service_pb2.CreateOrderResponse(
        order=order_store.order_message(row), split=_split_message(row)
    )


def _split_message(row: order_store.Row) -> dispatch_pb2.SplitDecision:
    return dispatch_pb2.SplitDecision(
        order_id=row["order_id"],
        area_id=row["area_id"] or "",
        fleet=row["fleet"],
        provider_id=row["provider_id"] or "",
        explanation=row["split_explanation"],
    )


def _token_expiry(settings: Settings, drop_end: dt.datetime | None) -> dt.datetime | None:
    """Links stay valid until the drop-off window ends plus the grace (no window: until
    delivery plus the grace, set then)."""
    if drop_end is None:
        return None
    return drop_end + dt.timedelta(seconds=settings.tracking_token_grace_s)


async def get_order(ctx: DispatchContext, tenant_id: str, order_id: str) -> dispatch_pb2.Order:
    """GetOrder: NotFound for an unknown order or one of another tenant."""
    async with ctx.database.pool.acquire() as conn:
        return order_store.order_message(await order_store.fetch_order(conn, tenant_id, order_id))


async def list_orders(
    ctx: DispatchContext, tenant_id: str, request: order_service_pb2.ListOrdersRequest
) -> order_service_pb2.ListOrdersResponse:
    """ListOrders: newest first, keyset-paged by (created_at, order_id)."""
    size = paging.page_size(ctx.settings, request.page_size)
    after = paging.decode_token(request.page_token, 2)
    clauses: list[str] = ["tenant_id = $1"]
    args: list[object] = [tenant_id]

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    statuses = enum_values(request.statuses, common_pb2.OrderStatus.DESCRIPTOR, "statuses")
    if statuses:
        clauses.append(f"status = ANY({bind(sorted(statuses))}::smallint[])")
    if request.driver_id:
        clauses.append(f"driver_id = {bind(request.driver_id)}")
    if request.origin_id:
        clauses.append(f"origin_id = {bind(request.origin_id)}")
    if after is not None:
        created = dt.datetime.fromisoformat(str(after[0]))
        clauses.append(f"(created_at, order_id) < ({bind(created)}, {bind(str(after[1]))})")
    sql = (
        f"SELECT * FROM orders WHERE {' AND '.join(clauses)}"
        f" ORDER BY created_at DESC, order_id DESC LIMIT {bind(size + 1)}"
    )
    async with ctx.database.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    page = rows[:size]
    token = ""
    if len(rows) > size:
        last = page[-1]
        token = paging.encode_token([last["created_at"].isoformat(), last["order_id"]])
    return order_service_pb2.ListOrdersResponse(
        orders=[order_store.order_message(r) for r in page], next_page_token=token
    )


async def cancel_order(
    ctx: DispatchContext, principal: Principal, request: order_service_pb2.CancelOrderRequest
) -> dispatch_pb2.Order:
    """CancelOrder: only before pickup (FAILED_PRECONDITION after); the driver is told, and
    gets the route without the order's stops."""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row = await order_store.fetch_order(conn, principal.tenant_id, request.order_id, lock=True)
        row, _ = await order_store.apply_change(
            conn,
            row,
            "cancelled",
            actor_of(principal),
            sm.CANCELLED,
            changes=ended_changes(ctx.settings),
            details={"reason": request.reason},
        )
        left = await route_versions.remove_orders(ctx, conn, [row["order_id"]])
    ctx.wake_outbox()
    if row["driver_id"]:
        command = driver_service_pb2.ConnectResponse(
            order_cancelled=driver_pb2.OrderCancelled(
                order_id=row["order_id"], reason=request.reason
            )
        )
        await send_command(ctx.bus, row["driver_id"], command)
    await route_versions.push_current(ctx, left, "cancelled")
    return order_store.order_message(row)
