"""TrackingService for customers: ``GetTracking`` (a snapshot) and ``Track`` (a snapshot, then
live updates from the order's channel until the order is final or the link stops working).

Track subscribes to the order's channel (through the process's shared
:class:`~tracking.channel_hub.ChannelHub`) *before* reading the snapshot, so nothing
published in between is lost; the snapshot may then be followed by an update it already
contains, which is harmless. Positions are forwarded only while the order is under way
(TO_PICKUP..NEARBY) and only when newer than the position the customer already has (the
snapshot's, or the last one sent since the last status change): a replayed processing round
publishes its positions again, and a stream whose snapshot was slow to build may hold
positions older than it. A status change seen twice (the relay delivers at least once) is
forwarded once. A stream ends with OK once its link expired or was revoked: at once when
dispatch announces the revocation, otherwise at the process's re-check of all its streams'
links every ``track_token_check_s`` (:mod:`tracking.link_checks`), busy streams too. When the
hub's subscription broke and came back (a Redis restart), updates published in between are
lost: the stream sends a new snapshot.

Limits per tracking link, in this process (docs/security.md): ``track_token_rate_per_s``
requests per second (GetTracking calls and Track opens, burst ``track_token_burst``) and at
most ``track_max_streams_per_token`` open Track streams; beyond either, RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from lastmile.tracking.v1 import tracking_service_pb2 as pb

from core import metrics, topics
from core.auth import tracking_token_digest
from core.errors import ResourceExhausted, ServiceError
from core.ratelimit import KeyedRateLimiter, StreamSlots
from core.settings import Settings
from tracking.active_orders import VISIBLE
from tracking.channel_hub import ChannelHub
from tracking.customer_snapshot import FINAL, SnapshotBuilder
from tracking.link_checks import LinkChecks


class CustomerTracking:
    """The handlers behind the Tracking servicer; see the module docstring."""

    def __init__(
        self, settings: Settings, snapshots: SnapshotBuilder, hub: ChannelHub, links: LinkChecks
    ) -> None:
        self._snapshots = snapshots
        self._hub = hub
        self._links = links
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
        _, snapshot = await self._snapshots.current(request.tracking_token)
        return pb.GetTrackingResponse(snapshot=snapshot)

    async def track(self, request: pb.TrackRequest) -> AsyncIterator[pb.TrackResponse]:
        """The Track stream of the token's order."""
        key = self._limit(request.tracking_token)
        if self._slots.count(key) >= self._slots.limit:
            metrics.LIMITED.labels("tracking_link_streams").inc()
        with self._slots.hold(key, "this tracking link"):
            async for message in self._follow(request.tracking_token, key):
                yield message

    async def _follow(self, token: str, digest: str) -> AsyncIterator[pb.TrackResponse]:
        """Snapshot, then updates until the order is final or the link stops working."""
        order = await self._snapshots.resolve(token)
        channel = topics.order_channel(order.order_id)
        async with (
            self._hub.watch(channel) as inbox,
            self._links.watch(digest, order.order_id, inbox.close),
        ):
            # Read the order again now that the subscription is confirmed (that can take a
            # while when Redis restarts): what changed before is in the snapshot, what changes
            # after comes on the channel.
            _, snapshot = await self._snapshots.current(token)
            yield pb.TrackResponse(snapshot=snapshot)
            status = int(snapshot.status)
            seen = {(int(e.status), e.at.ToNanoseconds()) for e in snapshot.timeline}
            shown_ns = snapshot.position_at.ToNanoseconds()
            while status not in FINAL:
                # Woken by an update, the hub (updates missed) or the link checks (closed).
                update = await inbox.get()
                if inbox.closed:
                    return  # the link stopped working (tracking.link_checks)
                if inbox.take_missed():
                    # The hub lost Redis for a moment: what was published meanwhile is gone,
                    # so a fresh snapshot (of the order as it is now) replaces everything.
                    try:
                        _, snapshot = await self._snapshots.current(token)
                    except ServiceError:
                        return  # the link stopped working meanwhile
                    yield pb.TrackResponse(snapshot=snapshot)
                    status = int(snapshot.status)
                    seen |= {(int(e.status), e.at.ToNanoseconds()) for e in snapshot.timeline}
                    shown_ns = max(shown_ns, snapshot.position_at.ToNanoseconds())
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
                    shown_ns = 0  # a reassigned order's new driver has a clock of their own
                elif kind == "position":
                    at_ns = update.position.position_at.ToNanoseconds()
                    if status not in VISIBLE or at_ns <= shown_ns:
                        continue
                    shown_ns = at_ns
                yield update
