"""WatchOriginOrders: one origin's orders as they arrive and change.

The stream reads the relayed order events (``topics.ORDER_EVENTS``, as WatchOrders does) and
turns each event of one of the origin's orders into the order's current
:class:`OriginOrder` view, with the event's stream id as the cursor. An event belongs to an
origin when its details name the origin (``origin_id``: the origin decision events, so a
rejecting origin sees its rejection and the fallback sees the reroute), else when the order is
with the origin now.

Without a cursor, the stream position is read first, then the origin's open orders are sent
(cursor: that position) and the live events follow from it: an order created in between
comes twice rather than never. With a cursor, stored events after it are replayed in chunks
first.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.origin.v1 import origin_service_pb2 as opb

from core import topics
from core.auth import Principal, Role
from core.bus import newest_id
from core.errors import InvalidArgument, NotFound, PermissionDenied
from dispatch import origin_view
from dispatch.context import DispatchContext

_CURSOR = re.compile(r"^\d+-\d+$")
_CHUNK = 500
Entry = tuple[str, dict[bytes, bytes]]


async def watched_origin(ctx: DispatchContext, principal: Principal, origin_id: str) -> str:
    """The origin the caller may watch: its own (origin token; empty = its own), any of the
    tenant's (staff). PERMISSION_DENIED for another origin, NOT_FOUND for an unknown one."""
    if principal.role == Role.ORIGIN:
        origin_id = origin_id or principal.subject
        if origin_id != principal.subject:
            raise PermissionDenied(f"origin {principal.subject!r} may not watch {origin_id!r}")
    elif not origin_id:
        raise InvalidArgument("origin_id is required")
    async with ctx.database.pool.acquire() as conn:
        found = await conn.fetchval(
            "SELECT 1 FROM origins WHERE origin_id = $1 AND tenant_id = $2",
            origin_id,
            principal.tenant_id,
        )
    if found is None:
        raise NotFound(f"origin {origin_id!r} not found")
    return origin_id


async def watch(
    ctx: DispatchContext, principal: Principal, request: opb.WatchOriginOrdersRequest
) -> AsyncIterator[opb.WatchOriginOrdersResponse]:
    """The stream (see the module docstring); runs until the client cancels."""
    if request.after_cursor and not _CURSOR.match(request.after_cursor):
        raise InvalidArgument("after_cursor is not a cursor from a WatchOriginOrders message")
    tenant_id = principal.tenant_id
    origin_id = await watched_origin(ctx, principal, request.origin_id)
    redis = ctx.bus.redis
    stream = topics.ORDER_EVENTS
    last = request.after_cursor
    if not last:
        last = await newest_id(redis, stream)
        for item in await _snapshot(ctx, tenant_id, origin_id, last):
            yield item
    else:
        while True:
            chunk: Any = await redis.xrange(stream, min=f"({last}", count=_CHUNK)
            entries = _entries(chunk)
            if entries:
                last = entries[-1][0]
            for item in await _changes(ctx, tenant_id, origin_id, entries):
                yield item
            if len(entries) < _CHUNK:
                break
    while True:
        reply: Any = await redis.xread(
            {stream: last}, count=_CHUNK, block=ctx.settings.watch_block_ms
        )
        for _, chunk in reply or []:
            entries = _entries(chunk)
            if entries:
                last = entries[-1][0]
            for item in await _changes(ctx, tenant_id, origin_id, entries):
                yield item


def _entries(chunk: Sequence[Any]) -> list[Entry]:
    return [(entry_id.decode(), fields) for entry_id, fields in chunk]


async def _snapshot(
    ctx: DispatchContext, tenant_id: str, origin_id: str, cursor: str
) -> list[opb.WatchOriginOrdersResponse]:
    async with ctx.database.pool.acquire() as conn:
        rows = await origin_view.open_rows(
            conn, tenant_id, origin_id, ctx.settings.origin_snapshot_max
        )
        etas = await origin_view.driver_etas(conn, rows)
    result = []
    for row in rows:
        order = origin_view.message(row, origin_id, eta=etas.get(row["order_id"]))
        order.cursor = cursor
        result.append(opb.WatchOriginOrdersResponse(order=order))
    return result


async def _changes(
    ctx: DispatchContext, tenant_id: str, origin_id: str, entries: Sequence[Entry]
) -> list[opb.WatchOriginOrdersResponse]:
    """The origin's messages for a chunk of stream entries (one database round for all)."""
    events = []
    for entry_id, fields in entries:
        if fields.get(b"tenant", b"").decode() != tenant_id:
            continue
        event = dispatch_pb2.OrderEvent.FromString(fields[b"data"])
        details: dict[str, Any] = json.loads(event.details_json or "{}")
        events.append((entry_id, event, details))
    if not events:
        return []
    async with ctx.database.pool.acquire() as conn:
        rows = await origin_view.rows_by_id(conn, tenant_id, [e.order_id for _, e, _ in events])
        etas = await origin_view.driver_etas(conn, list(rows.values()))
    result = []
    for entry_id, event, details in events:
        row = rows.get(event.order_id)
        named = details.get("origin_id")
        if row is None or (named or row["origin_id"]) != origin_id:
            continue
        order = origin_view.message(
            row,
            origin_id,
            change=event.event_type,
            eta=etas.get(event.order_id),
            reason=str(details.get("origin_reason", "")),
        )
        order.cursor = entry_id
        result.append(opb.WatchOriginOrdersResponse(order=order))
    return result
