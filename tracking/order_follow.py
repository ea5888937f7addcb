"""Follows the order events relayed by dispatch (``core.topics.ORDER_EVENTS``) for tracking.

Two reactions, both idempotent so every tracking process may follow the stream and a
restart may re-read: the cached active orders of the drivers concerned are dropped (a new
assignment or status shows in the next batch's fan-out and ETAs), and NEARBY and DELIVERED
are recorded in ``eta_arrivals`` (the process whose insert records a delivery finds when the
driver reached the drop-off, the actual arrival the ETA predictions are measured against, and
scores that order's ETAs in the ``lastmile_eta_error_seconds`` metric,
:mod:`tracking.eta_accuracy`). It reads from "now" on with XREAD (no consumer group: every
process needs every event). Arrivals of events missed while every process was down are caught
up at start from ``order_events``, the source of truth, ``eta_arrivals_catch_up_s`` back; the
stream position is taken first, so an event is either already in the table or still ahead in
the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from core import topics
from core.bus import Bus, newest_id
from core.db import Database
from core.settings import Settings
from core.workers import cancel
from tracking.active_orders import ActiveOrders
from tracking.eta_accuracy import DELIVERED, parse_horizons, record_reached, score_delivered

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)
RETRY_S = 1.0
ARRIVALS = frozenset({common_pb2.ORDER_STATUS_NEARBY, common_pb2.ORDER_STATUS_DELIVERED})


class OrderFollower:
    """Background component; see the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(
        self, settings: Settings, bus: Bus, database: Database, active: ActiveOrders
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._database = database
        self._active = active
        self._edges = parse_horizons(settings.eta_accuracy_horizons_s)
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Start following from the current end of the stream."""
        self._task = asyncio.create_task(self._run(), name="tracking-order-follower")

    async def stop(self) -> None:
        """Stop following."""
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        cursor: str | None = None  # until caught up
        while True:
            try:
                if cursor is None:
                    newest = await newest_id(self._bus.redis, topics.ORDER_EVENTS)
                    await self.catch_up()
                    cursor = newest
                reply: Any = await self._bus.redis.xread(
                    {topics.ORDER_EVENTS: cursor},
                    count=500,
                    block=self._settings.processor_block_ms,
                )
                events: list[dispatch_pb2.OrderEvent] = []
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                        with contextlib.suppress(Exception):
                            events.append(dispatch_pb2.OrderEvent.FromString(fields[b"data"]))
                if events:
                    await self.handle(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following order events failed; retrying")
                await asyncio.sleep(RETRY_S)

    async def handle(self, events: Sequence[dispatch_pb2.OrderEvent]) -> None:
        """Invalidate the caches and record arrivals of one read."""
        await self._active.invalidate_orders(sorted({e.order_id for e in events}))
        arrivals = [
            (e.order_id, int(e.to_status), e.at.ToDatetime(tzinfo=dt.UTC))
            for e in events
            if e.to_status in ARRIVALS and e.from_status != e.to_status
        ]
        if not arrivals:
            return
        order_ids, statuses, times = (list(column) for column in zip(*arrivals, strict=True))
        async with self._database.pool.acquire() as conn:
            recorded = await conn.fetch(
                "INSERT INTO eta_arrivals (order_id, status, arrived_at)"
                " SELECT * FROM unnest($1::text[], $2::smallint[], $3::timestamptz[])"
                " ON CONFLICT DO NOTHING RETURNING order_id, status, arrived_at",
                order_ids,
                statuses,
                times,
            )
            await self._score(conn, recorded)

    async def catch_up(self) -> int:
        """Record the arrivals of the last ``eta_arrivals_catch_up_s`` that are in
        ``order_events`` but not in ``eta_arrivals``; returns how many."""
        async with self._database.pool.acquire() as conn:
            recorded = await conn.fetch(
                "INSERT INTO eta_arrivals (order_id, status, arrived_at)"
                " SELECT order_id, to_status, min(at) FROM order_events"
                " WHERE to_status IN ($1, $2) AND from_status <> to_status"
                " AND at > now() - make_interval(secs => $3)"
                " GROUP BY order_id, to_status"
                " ON CONFLICT DO NOTHING RETURNING order_id, status, arrived_at",
                *sorted(ARRIVALS),
                self._settings.eta_arrivals_catch_up_s,
            )
            await self._score(conn, recorded)
        if recorded:
            log.info("caught up arrivals missed while down", extra={"count": len(recorded)})
        return len(recorded)

    async def _score(self, conn: Conn, recorded: Sequence[Any]) -> None:
        # Every tracking process follows the events; only the one whose insert recorded a
        # delivery finds its arrival and scores its ETAs, so the metric counts each once.
        delivered = {r["order_id"]: r["arrived_at"] for r in recorded if r["status"] == DELIVERED}
        reached = await record_reached(conn, list(delivered), self._settings)
        actual = {order_id: reached.get(order_id, at) for order_id, at in delivered.items()}
        await score_delivered(conn, actual, self._edges)
