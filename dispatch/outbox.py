"""The outbox relay and the WatchOrders stream.

The relay moves unpublished ``outbox`` rows, oldest first, to the Redis stream named by each
row's topic — ``topics.ORDER_EVENTS`` for order events (fields ``order``, ``tenant``,
``data`` = serialized OrderEvent) — and marks them published, in small batches. Status changes are also PUBLISHed as a
``TrackResponse{status}`` on the order's channel for customers' Track streams.

Crash safety: rows are read ``FOR UPDATE SKIP LOCKED`` inside a transaction that first takes
an advisory lock (one relay at a time keeps the stream in commit order across processes),
appended to the stream, and only then marked published. A crash after the append and before
the commit publishes those rows again: delivery is at least once, and consumers dedupe by
``(order_id, sequence)`` (the sequence is per order and never reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2
from lastmile.tracking.v1 import tracking_pb2, tracking_service_pb2

from core import topics
from core.bus import newest_id
from core.errors import InvalidArgument
from core.workers import cancel
from dispatch.context import DispatchContext
from dispatch.convert import message_from_json

log = logging.getLogger(__name__)
# Shared by every dispatch process: only one relays at a time (ordering).
_RELAY_LOCK = 0x1A57_0D01
_CURSOR = re.compile(r"^\d+-\d+$")
_REPLAY_CHUNK = 500


class OutboxRelay:
    """Background component of the dispatch process running the relay loop."""

    service_names: tuple[str, ...] = ()

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer: a worker."""

    async def start(self) -> None:
        """Start relaying unless disabled by settings (tests of crash safety)."""
        if self._ctx.settings.outbox_relay_enabled:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the loop; unpublished rows wait in the table for the next start."""
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        settings = self._ctx.settings
        while True:
            try:
                moved = await relay_once(self._ctx)
            except Exception:
                log.exception("outbox relay failed; retrying")
                moved = 0
            if moved >= settings.outbox_batch_size:
                continue  # more waiting
            self._ctx.outbox_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._ctx.outbox_wakeup.wait(), settings.outbox_poll_interval_s
                )


async def relay_once(ctx: DispatchContext) -> int:
    """Relay one batch; returns how many rows were published."""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
            return 0
        rows = await conn.fetch(
            "SELECT outbox_id, topic, key, payload, tenant_id FROM outbox"
            " WHERE published_at IS NULL ORDER BY outbox_id LIMIT $1 FOR UPDATE SKIP LOCKED",
            ctx.settings.outbox_batch_size,
        )
        if not rows:
            return 0
        await ctx.bus.append_many(
            [
                (r["topic"], {"order": r["key"], "tenant": r["tenant_id"], "data": r["payload"]})
                for r in rows
            ]
        )
        for row in rows:
            if row["topic"] != topics.ORDER_EVENTS:
                continue  # other services' rows (e.g. proof events) are relayed as they are
            update = customer_update(bytes(row["payload"]))
            if update is not None:
                await ctx.bus.publish(topics.order_channel(row["key"]), update)
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE outbox_id = ANY($1::bigint[])",
            [r["outbox_id"] for r in rows],
        )
    return len(rows)


def customer_update(payload: bytes) -> bytes | None:
    """The TrackResponse customers get for an order event, None when it is not for them."""
    event = dispatch_pb2.OrderEvent.FromString(payload)
    details: dict[str, Any] = json.loads(event.details_json or "{}")
    if event.event_type == "instructions_updated":
        response = tracking_service_pb2.TrackResponse()
        response.instructions.SetInParent()  # selects the oneof even when empty
        message_from_json(details.get("instructions"), response.instructions)
        return response.SerializeToString()
    if event.from_status == event.to_status:
        return None
    entry = tracking_pb2.StatusEntry(
        status=event.to_status,
        at=event.at,
        failure_reason=int(details.get("failure_reason", 0)),  # type: ignore[arg-type]
        detail=event.event_type,
    )
    return tracking_service_pb2.TrackResponse(status=entry).SerializeToString()


async def watch_orders(
    ctx: DispatchContext, tenant_id: str, request: order_service_pb2.WatchOrdersRequest
) -> AsyncIterator[order_service_pb2.WatchOrdersResponse]:
    """WatchOrders: replay after ``after_cursor`` (a stream id), then follow live; only the
    caller's tenant, and only ``order_ids`` when given. Runs until the client cancels."""
    if request.after_cursor and not _CURSOR.match(request.after_cursor):
        raise InvalidArgument("after_cursor is not a cursor from an OrderEvent")
    wanted = set(request.order_ids)
    redis = ctx.bus.redis
    stream = topics.ORDER_EVENTS
    last = request.after_cursor
    if not last:
        last = await newest_id(redis, stream)
    else:
        while True:  # replay what is stored after the cursor, in chunks
            chunk: Any = await redis.xrange(stream, min=f"({last}", count=_REPLAY_CHUNK)
            for entry_id, fields in chunk:
                last = entry_id.decode()
                item = _response(last, fields, tenant_id, wanted)
                if item is not None:
                    yield item
            if len(chunk) < _REPLAY_CHUNK:
                break
    while True:
        reply: Any = await redis.xread(
            {stream: last}, count=_REPLAY_CHUNK, block=ctx.settings.watch_block_ms
        )
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id.decode()
                item = _response(last, fields, tenant_id, wanted)
                if item is not None:
                    yield item


def _response(
    entry_id: str, fields: dict[bytes, bytes], tenant_id: str, wanted: set[str]
) -> order_service_pb2.WatchOrdersResponse | None:
    if fields.get(b"tenant", b"").decode() != tenant_id:
        return None
    if wanted and fields.get(b"order", b"").decode() not in wanted:
        return None
    event = dispatch_pb2.OrderEvent.FromString(fields[b"data"])
    event.cursor = entry_id
    return order_service_pb2.WatchOrdersResponse(event=event)
