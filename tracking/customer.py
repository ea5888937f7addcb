"""TrackingService for customers: ``GetTracking`` (a snapshot) and ``Track`` (a snapshot, then
live updates from the order's channel until the order is final or the link stops working).

Track subscribes to the order's channel (through the process's shared
:class:`~tracking.channel_hub.ChannelHub`) *before* reading the snapshot, so nothing
published in between is lost; the snapshot may then be followed by an update it already
contains, which is harmless. Positions are forwarded only while the order is under way
(TO_PICKUP..NEARBY); a status change seen twice (the relay delivers at least once) is
forwarded once. A stream re-checks its token every ``track_token_check_s`` (busy or idle) and
ends with OK once it expired or was revoked. When the hub's subscription broke and came back
(a Redis restart), updates published in between are lost: the stream sends a new snapshot.

Limits per tracking link, in this process (docs/security.md): ``track_token_rate_per_s``
requests per second (GetTracking calls and Track opens, burst ``track_token_burst``) and at
most ``track_max_streams_per_token`` open Track streams; beyond either, RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from lastmile.tracking.v1 import tracking_service_pb2 as pb

from core import metrics, topics
from core.auth import tracking_token_digest
from core.errors import ResourceExhausted, ServiceError
from core.ratelimit import KeyedRateLimiter, StreamSlots
from core.settings import Settings
from tracking.active_orders import VISIBLE
from tracking.channel_hub import ChannelHub
from tracking.customer_snapshot import FINAL, SnapshotBuilder, TrackedOrder


class CustomerTracking:
    """The handlers behind the Tracking servicer; see the module docstring."""

    def __init__(self, settings: Settings, snapshots: SnapshotBuilder, hub: ChannelHub) -> None:
        self._check_s = settings.track_token_check_s
        self._snapshots = snapshots
        self._hub = hub
        self._rate = KeyedRateLimiter(
            settings.track_token_rate_per_s, settings.track_token_burst, settings.limiter_max_keys
        )
        self._slots = StreamSlots(settings.track_max_streams_per_token)

    def _limit(self, token: str) -> str:
        """The link's key for the limiters (its digest); RESOURCE_EXHAUSTED over the rate."""
        key = tracking_token_digest(token)
        if not self._rate.allow(key):
            metrics.LIMITED.labels("tracking_link_requests").inc()
            raise ResourceExhausted("too many requests for this tracking link; retry later")
        return key

    async def get_tracking(self, request: pb.GetTrackingRequest) -> pb.GetTrackingResponse:
        """The current snapshot of the token's order."""
        self._limit(request.tracking_token)
        order = await self._snapshots.resolve(request.tracking_token)
        return pb.GetTrackingResponse(snapshot=await self._snapshots.snapshot(order))

    async def track(self, request: pb.TrackRequest) -> AsyncIterator[pb.TrackResponse]:
        """The Track stream of the token's order."""
        key = self._limit(request.tracking_token)
        if self._slots.count(key) >= self._slots.limit:
            metrics.LIMITED.labels("tracking_link_streams").inc()
        with self._slots.hold(key, "this tracking link"):
            async for message in self._follow(request.tracking_token):
                yield message

    async def _follow(self, token: str) -> AsyncIterator[pb.TrackResponse]:
        """Snapshot, then updates until the order is final or the link stops working."""
        order = await self._snapshots.resolve(token)
        async with self._hub.watch(topics.order_channel(order.order_id)) as inbox:
            # Read the order again now that the subscription is confirmed (that can take a
            # while when Redis restarts): what changed before is in the snapshot, what changes
            # after comes on the channel.
            order = await self._snapshots.resolve(token)
            snapshot = await self._snapshots.snapshot(order)
            yield pb.TrackResponse(snapshot=snapshot)
            status = int(snapshot.status)
            seen = {(int(e.status), e.at.ToNanoseconds()) for e in snapshot.timeline}
            next_check = time.monotonic() + self._check_s
            while status not in FINAL:
                update = await inbox.get(self._check_s)
                if time.monotonic() >= next_check:
                    # Busy streams too: a revoked link must not live on while positions flow.
                    if not await self._still_valid(token, order):
                        return
                    next_check = time.monotonic() + self._check_s
                if inbox.take_missed():
                    # The hub lost Redis for a moment: what was published meanwhile is gone,
                    # so a fresh snapshot (of the order as it is now) replaces everything.
                    try:
                        order = await self._snapshots.resolve(token)
                    except ServiceError:
                        return  # the link stopped working meanwhile
                    snapshot = await self._snapshots.snapshot(order)
                    yield pb.TrackResponse(snapshot=snapshot)
                    status = int(snapshot.status)
                    seen |= {(int(e.status), e.at.ToNanoseconds()) for e in snapshot.timeline}
                    continue
                if update is None:
                    continue
                kind = update.WhichOneof("update")
                if kind == "status":
                    key = (int(update.status.status), update.status.at.ToNanoseconds())
                    if key in seen:
                        continue
                    seen.add(key)
                    status = int(update.status.status)
                elif kind == "position" and status not in VISIBLE:
                    continue
                yield update

    async def _still_valid(self, token: str, order: TrackedOrder) -> bool:
        try:
            return (await self._snapshots.resolve(token)).order_id == order.order_id
        except ServiceError:
            return False
