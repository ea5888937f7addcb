"""One Redis pub/sub connection per process, shared by every customer Track stream.

Thousands of streams watching thousands of orders must not open a connection each: the hub
SUBSCRIBEs to an order channel when its first watcher arrives, UNSUBSCRIBEs when the last
leaves, and copies each message into the bounded :class:`Inbox` of every watcher of that
channel. An inbox never blocks the reader. A position, ETA or route line replaces the one of
its kind still queued: a stream that fell behind (its snapshot was slow to build, or its
customer reads slowly) sends the newest, not a backlog of stale ones. When full, an inbox
drops its oldest update, never a status change unless nothing else can go. When the connection
breaks, the hub subscribes every watched channel again on a new connection; the confirmations
of those re-subscriptions mark the channels' inboxes as having missed updates, and their
streams start over from a snapshot (see Inbox.take_missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from lastmile.tracking.v1 import tracking_service_pb2
from prometheus_client import Counter, Gauge
from redis.asyncio.client import PubSub

from core.bus import Bus
from core.errors import Unavailable
from core.workers import cancel

log = logging.getLogger(__name__)
RETRY_S = 1.0
# Longest wait for Redis to confirm a SUBSCRIBE before the stream goes on regardless.
SUBSCRIBE_WAIT_S = 5.0
# Updates superseded by the next one of their kind: safe to drop under pressure.
_DROPPABLE = frozenset({"position", "eta", "route_line"})
WATCHERS = Gauge("lastmile_tracking_watchers", "Track streams attached to the channel hub.")
CHANNELS = Gauge("lastmile_tracking_channels", "Order channels the hub is subscribed to.")
DROPPED = Counter("lastmile_tracking_updates_dropped_total", "Updates dropped by full inboxes.")
SUPERSEDED = Counter(
    "lastmile_tracking_updates_superseded_total",
    "Queued positions, ETAs and route lines replaced by a newer one before their Track stream"
    " sent them (the stream was behind).",
)


class Inbox:
    """The bounded queue of one Track stream."""

    def __init__(self, size: int) -> None:
        self._items: deque[tracking_service_pb2.TrackResponse] = deque()
        self._size = max(1, size)
        self._ready = asyncio.Event()
        self._missed = False
        self._closed = False

    def mark_missed(self) -> None:
        """Updates may have been lost (the subscription was re-established): the stream must
        start over from a snapshot; what is queued is older than that snapshot."""
        self._missed = True
        self._ready.set()

    def close(self) -> None:
        """The stream must end (its link stopped working): wakes its reader."""
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def take_missed(self) -> bool:
        """Whether updates were lost since the last call; clears the flag and the queue."""
        if not self._missed:
            return False
        self._missed = False
        self._items.clear()
        return True

    def put(self, update: tracking_service_pb2.TrackResponse) -> None:
        """Add an update: it replaces a queued one of its kind if that kind is superseded by
        the next (positions, ETAs, route lines); when full, drop the oldest droppable one
        (else the oldest)."""
        kind = update.WhichOneof("update")
        if kind in _DROPPABLE:
            for index, queued in enumerate(self._items):
                if queued.WhichOneof("update") == kind:
                    del self._items[index]
                    SUPERSEDED.inc()
                    break
        if len(self._items) >= self._size:
            DROPPED.inc()
            for index, queued in enumerate(self._items):
                if queued.WhichOneof("update") in _DROPPABLE:
                    del self._items[index]
                    break
            else:
                self._items.popleft()
        self._items.append(update)
        self._ready.set()

    async def get(self, wait_s: float | None = None) -> tracking_service_pb2.TrackResponse | None:
        """The next update, or None after ``wait_s`` seconds without one (never, when None) or
        at once when updates were missed (:meth:`take_missed`) or the inbox is closed."""
        if not self._items and not self._missed and not self._closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)
        return self._items.popleft() if self._items else None


class ChannelHub:
    """The shared subscription (a host component); see the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(self, bus: Bus, inbox_size: int) -> None:
        self._bus = bus
        self._inbox_size = inbox_size
        self._watchers: dict[str, set[Inbox]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._has_channels = asyncio.Event()
        self._lock = asyncio.Lock()
        # Channels whose SUBSCRIBE Redis has not confirmed yet.
        self._unconfirmed: dict[str, asyncio.Event] = {}

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Open the shared connection and start reading."""
        self._pubsub = self._bus.redis.pubsub()
        self._task = asyncio.create_task(self._read(), name="tracking-channel-hub")

    async def stop(self) -> None:
        """Stop reading and close the connection (streams have drained by now)."""
        await cancel(self._task)
        self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Inbox]:
        """An inbox receiving ``channel``'s updates while the context is open."""
        inbox = Inbox(self._inbox_size)
        await self._attach(channel, inbox)
        try:
            yield inbox
        finally:
            await self._detach(channel, inbox)

    async def _attach(self, channel: str, inbox: Inbox) -> None:
        """Add ``inbox`` to the channel's watchers, subscribing on the first one, and return
        once Redis confirmed the subscription, so that no update between the caller's
        snapshot and the first live message is missed. UNAVAILABLE when Redis does not
        confirm in time (a write to a dead connection can look successful)."""
        assert self._pubsub is not None, "hub not started"
        async with self._lock:
            watchers = self._watchers.setdefault(channel, set())
            watchers.add(inbox)
            WATCHERS.inc()
            if len(watchers) == 1:
                self._unconfirmed[channel] = asyncio.Event()
                CHANNELS.inc()
                try:
                    await self._pubsub.subscribe(channel)
                except BaseException:
                    # Leave no trace, or the next watcher would count on this subscription.
                    self._remove(channel, inbox)
                    raise
                self._has_channels.set()
            confirmed = self._unconfirmed.get(channel)
        if confirmed is None:
            return
        try:
            await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_WAIT_S)
        except BaseException as exc:
            await self._detach(channel, inbox)
            if isinstance(exc, TimeoutError):
                raise Unavailable("live updates are unavailable; retry with backoff") from exc
            raise

    async def _detach(self, channel: str, inbox: Inbox) -> None:
        async with self._lock:
            if self._remove(channel, inbox) and self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel)

    def _remove(self, channel: str, inbox: Inbox) -> bool:
        """Drop ``inbox`` from the channel's watchers; True when it was the last one."""
        watchers = self._watchers.get(channel)
        if watchers is None or inbox not in watchers:
            return False
        watchers.discard(inbox)
        WATCHERS.dec()
        if watchers:
            return False
        del self._watchers[channel]
        self._unconfirmed.pop(channel, None)
        CHANNELS.dec()
        return True

    async def _read(self) -> None:
        broken = False
        while True:
            try:
                if broken:
                    await self._renew()
                    broken = False
                await self._has_channels.wait()
                assert self._pubsub is not None
                message = await self._pubsub.get_message(timeout=1.0)
                if message is None:
                    if not self._watchers:
                        self._has_channels.clear()
                    continue
                self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("channel hub lost Redis; subscribing again", extra={"error": str(exc)})
                broken = True
                await asyncio.sleep(RETRY_S)

    async def _renew(self) -> None:
        """Replace a broken subscription by a new connection subscribed to every watched
        channel. (Not redis-py's own reconnection: it races with concurrent SUBSCRIBEs of new
        watchers.) The confirmations mark the watchers as having missed updates."""
        async with self._lock:
            old, self._pubsub = self._pubsub, self._bus.redis.pubsub()
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()  # type: ignore[no-untyped-call]
            if not self._watchers:
                self._has_channels.clear()  # nothing to read until a watcher subscribes
                return
            await self._pubsub.subscribe(*self._watchers)

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if message.get("type") == "subscribe":
            confirmed = self._unconfirmed.pop(name, None)
            if confirmed is not None:
                confirmed.set()
            else:
                # A re-subscription after a reconnect (ours or redis-py's): whatever was
                # published while the connection was down never reached us.
                for inbox in self._watchers.get(name, ()):
                    inbox.mark_missed()
            return
        if message.get("type") != "message":
            return
        watchers = self._watchers.get(name)
        if not watchers:
            return
        try:
            update = tracking_service_pb2.TrackResponse.FromString(bytes(message["data"]))
        except Exception:
            log.warning("undecodable update on %s skipped", name)
            return
        for inbox in watchers:
            inbox.put(update)
