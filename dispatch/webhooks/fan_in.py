"""The fan-in (a component of the dispatch process): order, proof and geofence events from
the bus become webhook deliveries, and status changes become customer notifications.

One consumer group reads the three streams under one fixed consumer name, and only the
process holding a PostgreSQL advisory lock reads at a time (in the transaction that inserts),
so replicas never fan in concurrently and an order's events are inserted in stream order.
Each round first re-reads the entries it read but did not ack (a crash or a failed insert),
then new ones; entries are acked only after the inserts committed. A replay inserts nothing:
deliveries are unique per (webhook, event id) and notifications per their key.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.pod.v1 import pod_pb2
from lastmile.tracking.v1 import tracking_pb2

from core import topics
from core.bus import StreamEntry
from core.workers import PollingWorker
from dispatch import order_store
from dispatch.context import DispatchContext
from dispatch.webhooks import events, notifications, queue
from dispatch.webhooks.notifications import NotificationChannel

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)
GROUP = "dispatch-webhooks"
#: Shared by every replica: the lock makes one reader at a time, and a replica that died
#: leaves its unacked entries to whoever reads next.
CONSUMER = "webhooks"
STREAMS = (topics.ORDER_EVENTS, topics.PROOF_EVENTS, topics.GEOFENCE_EVENTS)
_FAN_IN_LOCK = 0x1A57_0E01


class WebhookFanIn(PollingWorker):
    """See the module docstring."""

    name = "webhook-fan-in"

    def __init__(self, ctx: DispatchContext, channel: NotificationChannel) -> None:
        super().__init__(ctx.settings.webhook_poll_interval_s)
        self._ctx = ctx
        self._channel = channel
        self._zone = notifications.zone_of(ctx.settings.notify_timezone)

    async def start(self) -> None:
        """Create the group if missing, at the end of the streams (history from before
        webhooks existed is not fanned in), and start the loop."""
        for stream in STREAMS:
            await self._ctx.bus.ensure_group(stream, GROUP, "$")
        await super().start()

    async def round(self) -> bool:
        """Fan in one batch."""
        return await self.fan_in_once() >= self._ctx.settings.webhook_batch_size

    async def fan_in_once(self) -> int:
        """Read, insert and commit, then ack one batch; returns how many entries it took."""
        ctx = self._ctx
        async with ctx.database.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _FAN_IN_LOCK):
                return 0
            entries = await self._read()
            inserted = 0
            for entry in sorted(entries, key=_arrival):
                inserted += await self._handle(conn, entry)
        by_stream: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry.entry_id)
        for stream, ids in by_stream.items():
            await ctx.bus.ack(stream, GROUP, ids)
        if inserted:
            ctx.webhook_wakeup.set()
        return len(entries)

    async def _read(self) -> list[StreamEntry]:
        """This consumer's unacked entries first, else new ones."""
        redis = self._ctx.bus.redis
        count = self._ctx.settings.webhook_batch_size
        for start in ("0", ">"):
            reply: Any = await redis.xreadgroup(
                GROUP, CONSUMER, {s: start for s in STREAMS}, count=count
            )
            entries = [
                StreamEntry(stream.decode(), entry_id.decode(), fields or {})
                for stream, items in reply or []
                for entry_id, fields in items
            ]
            if entries:
                return entries
        return []

    async def _handle(self, conn: Conn, entry: StreamEntry) -> int:
        """Deliveries (and a notification) of one entry; an undecodable entry is skipped."""
        try:
            if entry.stream == topics.ORDER_EVENTS:
                return await self._order_event(conn, entry)
            if entry.stream == topics.PROOF_EVENTS:
                return await self._proof(conn, entry)
            return await self._geofence(conn, entry)
        except (DecodeError, KeyError, ValueError) as exc:
            log.warning(
                "bus entry skipped by the webhook fan-in",
                extra={"stream": entry.stream, "entry": entry.entry_id, "reason": repr(exc)},
            )
            return 0

    async def _order_event(self, conn: Conn, entry: StreamEntry) -> int:
        event = dispatch_pb2.OrderEvent.FromString(entry.fields[b"data"])
        tenant_id = entry.fields.get(b"tenant", b"").decode()
        if not tenant_id:
            tenant_id = await _order_tenant(conn, event.order_id)
        if not tenant_id:
            return 0
        inserted = 0
        webhook_event = events.from_order_event(tenant_id, event)
        if webhook_event is not None:
            inserted += await queue.enqueue(conn, webhook_event)
        trigger = notifications.status_trigger(event)
        at = event.at.ToDatetime(tzinfo=dt.UTC)
        age_s = (dt.datetime.now(dt.UTC) - at).total_seconds()
        if trigger is None or age_s > self._ctx.settings.notify_max_age_s:
            return inserted  # "your driver is nearly there" an hour late helps nobody
        row = await order_store.fetch_order_any_tenant(conn, event.order_id)
        if row is not None:
            note = notifications.build(row, trigger, event.sequence, at, self._zone)
            inserted += int(await notifications.notify(conn, self._channel, note))
        return inserted

    async def _proof(self, conn: Conn, entry: StreamEntry) -> int:
        proof = pod_pb2.Proof.FromString(entry.fields[b"data"])
        tenant_id = entry.fields.get(b"tenant", b"").decode()
        tenant_id = tenant_id or await _order_tenant(conn, proof.order_id)
        if not tenant_id:
            return 0
        return await queue.enqueue(conn, events.from_proof(tenant_id, proof))

    async def _geofence(self, conn: Conn, entry: StreamEntry) -> int:
        event = tracking_pb2.GeofenceEvent.FromString(entry.fields[b"data"])
        tenant_id = await conn.fetchval(
            "SELECT tenant_id FROM geofences WHERE geofence_id = $1", event.geofence_id
        )
        if tenant_id is None and event.order_id:
            tenant_id = await _order_tenant(conn, event.order_id)
        webhook_event = events.from_geofence(tenant_id or "", entry.entry_id, event)
        if not tenant_id or webhook_event is None:
            return 0
        return await queue.enqueue(conn, webhook_event)


async def _order_tenant(conn: Conn, order_id: str) -> str:
    tenant: str | None = await conn.fetchval(
        "SELECT tenant_id FROM orders WHERE order_id = $1", order_id
    )
    return tenant or ""


def _arrival(entry: StreamEntry) -> tuple[int, int, str]:
    """Stream ids are Redis clock times: sorting by them interleaves the streams in the
    order the entries arrived."""
    millis, _, seq = entry.entry_id.partition("-")
    return int(millis), int(seq or 0), entry.stream
