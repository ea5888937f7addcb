"""Offers of instant orders to drivers: made, answered, expired.

An offer lives in Redis as one JSON value (:func:`offer_key`, with a TTL) plus a member of a
sorted set scored by its expiry (:data:`EXPIRY_INDEX`); the orders it carries are OFFERED in
PostgreSQL with the driver recorded. Whoever resolves an offer first (the driver's answer or
the expiry sweeper) takes it with one atomic GETDEL; the other finds nothing and does
nothing, so replayed answers and a sweeper racing an answer are harmless.

- accept -> each order OFFERED to this driver -> ASSIGNED, its pickup and drop-off put on
  the driver's route (:mod:`dispatch.route_insert`) and the new version pushed;
- reject -> back to PENDING, the driver excluded for those orders (:func:`excluded_key`),
  re-offered to the next best driver by the next round;
- expiry -> the same as a reject, plus OfferWithdrawn to the driver.

The Redis value is written before the orders' transaction commits, so an offered order
always has its offer; an offer whose orders did not commit resolves to nothing. Orders left
OFFERED by a crash between GETDEL and the commit are released by :func:`release_orphans`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.driver_commands import offer_key, send_command
from dispatch import decisions, order_store, route_insert, route_versions
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now, to_timestamp
from dispatch.order_store import SYSTEM, Actor, Row

log = logging.getLogger(__name__)

EXPIRY_INDEX = "lastmile:instant:offer-expiry"
# How long a driver stays excluded from an order it declined or let expire.
EXCLUSION_TTL_S = 24 * 3600


def excluded_key(order_id: str) -> str:
    """Set of drivers not to offer the order to again."""
    return f"lastmile:instant:excluded:{order_id}"


@dataclass(frozen=True, slots=True)
class OfferPlan:
    """What the matcher decided for one driver, with the figures shown to the driver."""

    offer_id: str
    tenant_id: str
    driver_id: str
    order_ids: tuple[str, ...]
    added_distance_m: float
    added_duration_s: float
    details: dict[str, Any]


async def make_offer(ctx: DispatchContext, plan: OfferPlan) -> list[str]:
    """Record the offer, move its still-PENDING orders to OFFERED and send it to the driver;
    returns the order ids offered (none when every order moved on meanwhile)."""
    timeout = ctx.settings.instant_offer_timeout_s
    expires = now() + dt.timedelta(seconds=timeout)
    rows: list[Row] = []
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        locked = [
            await order_store.fetch_order_any_tenant(conn, o, lock=True) for o in plan.order_ids
        ]
        pending = [r for r in locked if r is not None and r["status"] == sm.PENDING]
        if not pending:
            return []
        expires_ms = int(expires.timestamp() * 1000)
        record = {
            "driver_id": plan.driver_id,
            "tenant_id": plan.tenant_id,
            "order_ids": [r["order_id"] for r in pending],
            "expires_ms": expires_ms,
        }
        # Before the commit: an OFFERED order always has its offer (see the module docstring).
        redis = ctx.bus.redis
        ttl_ms = int((timeout + EXCLUSION_TTL_S) * 1000)
        await redis.set(offer_key(plan.offer_id), json.dumps(record), px=ttl_ms)
        await redis.zadd(EXPIRY_INDEX, {plan.offer_id: expires_ms})
        details = {"offer_id": plan.offer_id, "driver_id": plan.driver_id, **plan.details}
        for row in pending:
            updated, _ = await order_store.apply_change(
                conn,
                row,
                "offered",
                SYSTEM,
                to_status=sm.OFFERED,
                changes={"driver_id": plan.driver_id},
                details=details,
            )
            rows.append(updated)
    ctx.wake_outbox()
    offer = driver_pb2.Offer(
        offer_id=plan.offer_id,
        orders=[_offered(r) for r in rows],
        expires_at=to_timestamp(expires),
        added_distance_m=plan.added_distance_m,
        added_duration_s=plan.added_duration_s,
    )
    await send_command(ctx.bus, plan.driver_id, driver_service_pb2.ConnectResponse(offer=offer))
    decisions.record("offer", "made", 1 if rows else 0)
    return [r["order_id"] for r in rows]


def _offered(row: Row) -> driver_pb2.OfferedOrder:
    order = order_store.order_message(row)
    offered = driver_pb2.OfferedOrder(
        order_id=row["order_id"],
        pickup=common_pb2.LatLng(lat=row["pickup_lat"], lng=row["pickup_lng"]),
        drop_off=common_pb2.LatLng(lat=row["drop_off_lat"], lng=row["drop_off_lng"]),
    )
    if order.HasField("pickup_window"):
        offered.pickup_window.CopyFrom(order.pickup_window)
    if order.HasField("drop_off_window"):
        offered.drop_off_window.CopyFrom(order.drop_off_window)
    return offered


async def answer_offer(
    ctx: DispatchContext, driver_id: str, answer: driver_pb2.OfferAnswer
) -> None:
    """The driver's answer: accept assigns, reject releases (see the module docstring). An
    answer to an offer already resolved, or of another driver, changes nothing."""
    record = await _take(ctx, answer.offer_id, driver_id)
    if record is None:
        log.info("answer to a resolved offer", extra={"offer": answer.offer_id})
        return
    actor = Actor(f"driver:{driver_id}")
    if answer.accepted:
        await _resolve(ctx, answer.offer_id, record, actor, sm.ASSIGNED, "offer_accepted", "")
    else:
        reason = answer.reject_reason or "declined"
        await _resolve(ctx, answer.offer_id, record, actor, sm.PENDING, "offer_declined", reason)


async def expire_due(ctx: DispatchContext) -> int:
    """Expire every offer past its time: orders back to PENDING, the driver excluded and told
    with OfferWithdrawn. Returns how many offers expired."""
    now_ms = int(now().timestamp() * 1000)
    due: Any = await ctx.bus.redis.zrangebyscore(EXPIRY_INDEX, "-inf", now_ms)
    expired = 0
    for raw in due:
        offer_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        record = await _take(ctx, offer_id, None)
        await ctx.bus.redis.zrem(EXPIRY_INDEX, offer_id)
        if record is None:
            continue
        await _resolve(ctx, offer_id, record, SYSTEM, sm.PENDING, "offer_expired", "timeout")
        withdrawn = driver_pb2.OfferWithdrawn(offer_id=offer_id, reason="expired")
        await send_command(
            ctx.bus,
            record["driver_id"],
            driver_service_pb2.ConnectResponse(offer_withdrawn=withdrawn),
        )
        expired += 1
    return expired


async def release_orphans(ctx: DispatchContext, older_than_s: float) -> int:
    """OFFERED instant orders without a live offer for ``older_than_s`` (a crash between
    taking an offer and committing its outcome) go back to PENDING."""
    cutoff = now() - dt.timedelta(seconds=older_than_s)
    released = 0
    async with ctx.database.pool.acquire() as conn:
        ids = await conn.fetch(
            "SELECT order_id FROM orders WHERE status = $1 AND updated_at < $2",
            sm.OFFERED,
            cutoff,
        )
    for record in ids:
        async with ctx.database.pool.acquire() as conn, conn.transaction():
            row = await order_store.fetch_order_any_tenant(conn, record["order_id"], lock=True)
            if row is None or row["status"] != sm.OFFERED or row["updated_at"] >= cutoff:
                continue
            await order_store.apply_change(
                conn, row, "offer_lost", SYSTEM, to_status=sm.PENDING, changes={"driver_id": None}
            )
            released += 1
    if released:
        ctx.wake_outbox()
    return released


async def _take(
    ctx: DispatchContext, offer_id: str, driver_id: str | None
) -> dict[str, Any] | None:
    """Atomically take the offer (None when gone, or when it is another driver's)."""
    if not offer_id:
        return None
    key = offer_key(offer_id)
    if driver_id is not None:
        # Check the owner before taking, so that a forged answer cannot consume the offer.
        raw = await ctx.bus.redis.get(key)
        if raw is None or json.loads(raw)["driver_id"] != driver_id:
            return None
    raw = await ctx.bus.redis.getdel(key)
    if raw is None:
        return None
    record: dict[str, Any] = json.loads(raw)
    return record


async def _resolve(
    ctx: DispatchContext,
    offer_id: str,
    record: dict[str, Any],
    actor: Actor,
    target: int,
    event_type: str,
    reason: str,
) -> None:
    driver_id = str(record["driver_id"])
    order_ids: Sequence[str] = record["order_ids"]
    decisions.record("offer", event_type)
    await ctx.bus.redis.zrem(EXPIRY_INDEX, offer_id)
    details = {"offer_id": offer_id, "driver_id": driver_id, "reason": reason}
    route_id = ""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        rows = []
        for order_id in order_ids:
            row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
            if row is None or row["status"] != sm.OFFERED or row["driver_id"] != driver_id:
                continue  # cancelled or moved on meanwhile
            rows.append(row)
        if target == sm.ASSIGNED and rows:
            # Accepted: the orders become stops of the driver's route (dispatch.route_insert).
            route = await route_insert.place_orders(
                ctx, conn, rows[0]["tenant_id"], driver_id, rows
            )
            route_id = route["route_id"]
        changes = {"route_id": route_id} if target == sm.ASSIGNED else {"driver_id": None}
        for row in rows:
            await order_store.apply_change(
                conn, row, event_type, actor, to_status=target, changes=changes, details=details
            )
    ctx.wake_outbox()
    if route_id:
        await route_versions.push_current(ctx, [route_id], "offer_accepted")
    if target == sm.PENDING:
        pipe = ctx.bus.redis.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.sadd(excluded_key(order_id), driver_id)
            pipe.expire(excluded_key(order_id), EXCLUSION_TTL_S)
        await pipe.execute()


async def exclusions(ctx: DispatchContext, order_ids: Sequence[str]) -> dict[str, frozenset[str]]:
    """Drivers excluded per order (declined or let an offer of it expire)."""
    pipe = ctx.bus.redis.pipeline(transaction=False)
    for order_id in order_ids:
        pipe.smembers(excluded_key(order_id))
    replies: list[Any] = await pipe.execute()
    return {
        order_id: frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        for order_id, members in zip(order_ids, replies, strict=True)
        if members
    }
