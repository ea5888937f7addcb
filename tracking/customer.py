"""TrackingService for customers: ``GetTracking`` (a snapshot) and ``Track`` (a snapshot, then
live updates from the order's channel until the order is final or the link stops working).

Track subscribes to the order's channel (through the process's shared
:class:`~tracking.channel_hub.ChannelHub`) *before* reading the snapshot, so nothing
published in between is lost; the snapshot may then be followed by an update it already
contains, which is harmless. Positions are forwarded only while the order is under way
(TO_PICKUP..NEARBY); a status change seen twice (the relay delivers at least once) is
forwarded once. An idle stream re-checks its token every ``track_token_check_s`` and ends
with OK once it expired or was revoked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from lastmile.tracking.v1 import tracking_service_pb2 as pb

from core import topics
from core.errors import ServiceError
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

    async def get_tracking(self, request: pb.GetTrackingRequest) -> pb.GetTrackingResponse:
        """The current snapshot of the token's order."""
        order = await self._snapshots.resolve(request.tracking_token)
        return pb.GetTrackingResponse(snapshot=await self._snapshots.snapshot(order))

    async def track(self, request: pb.TrackRequest) -> AsyncIterator[pb.TrackResponse]:
        """The Track stream of the token's order."""
        order = await self._snapshots.resolve(request.tracking_token)
        async with self._hub.watch(topics.order_channel(order.order_id)) as inbox:
            snapshot = await self._snapshots.snapshot(order)
            yield pb.TrackResponse(snapshot=snapshot)
            status = int(snapshot.status)
            seen = {(int(e.status), e.at.ToNanoseconds()) for e in snapshot.timeline}
            while status not in FINAL:
                update = await inbox.get(self._check_s)
                if update is None:
                    if not await self._still_valid(request.tracking_token, order):
                        return
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
