"""Driver positions to the customers of the driver's orders (a processor PositionObserver).

For each processed batch: the active orders of every driver in it (cached,
:mod:`tracking.active_orders`), then one PUBLISH of a ``TrackResponse{position}`` per visible
order on its channel, all in one pipeline. Whichever tracking process holds a customer's
Track stream receives it (Redis pub/sub), so gateways, processors and customer-facing servers
scale out independently. The position is the road-snapped one, rounded to
``customer_position_decimals``: customers see an approximate position, never the raw fix, and
only on the channel of their own order.

``lastmile_tracking_fanout_latency_seconds`` measures, per driver update published, the time
from the gateway's receipt of its newest fix to the PUBLISH (the server clocks only: a phone's
clock may be off by minutes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.tracking.v1 import tracking_service_pb2
from prometheus_client import Counter, Histogram

from core import topics
from core.bus import Bus
from core.geo import LatLng
from core.settings import Settings
from tracking.active_orders import VISIBLE, ActiveOrders
from tracking.positions import PositionUpdate

PUBLISHED = Counter(
    "lastmile_tracking_positions_published_total", "Position updates published to customers."
)
LATENCY = Histogram(
    "lastmile_tracking_fanout_latency_seconds",
    "From the gateway's receipt of a fix to its publication to the customers' channels.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def approximate(position: LatLng, decimals: int) -> LatLng:
    """``position`` rounded: what a customer may see of a driver."""
    return LatLng(round(position.lat, decimals), round(position.lng, decimals))


def position_message(update: PositionUpdate, decimals: int) -> bytes:
    """The serialized TrackResponse{position} of a driver update."""
    shown = approximate(update.shown, decimals)
    at = Timestamp()
    at.FromDatetime(update.at)
    response = tracking_service_pb2.TrackResponse()
    response.position.position.lat, response.position.position.lng = shown.lat, shown.lng
    response.position.heading_deg = update.heading_deg
    response.position.position_at.CopyFrom(at)
    return response.SerializeToString()


class PositionFanout:
    """Publishes driver positions on their orders' channels; see the module docstring."""

    def __init__(self, settings: Settings, bus: Bus, active: ActiveOrders) -> None:
        self._decimals = settings.customer_position_decimals
        self._bus = bus
        self._active = active

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        """One pipeline of PUBLISHes for every visible order of the batch's drivers."""
        if not updates:
            return
        orders = await self._active.of_batch(updates)
        pipe = self._bus.redis.pipeline(transaction=False)
        count = 0
        published: list[PositionUpdate] = []
        for update in updates:
            visible = [o for o in orders.get(update.driver_id, []) if o.status in VISIBLE]
            if not visible:
                continue
            payload = position_message(update, self._decimals)
            for order in visible:
                pipe.publish(topics.order_channel(order.order_id), payload)
                count += 1
            published.append(update)
        if count:
            await pipe.execute()
            PUBLISHED.inc(count)
            _observe_latency(published)


def _observe_latency(published: Sequence[PositionUpdate]) -> None:
    """Receipt-to-publish time of each driver update just published."""
    now = dt.datetime.now(dt.UTC)
    for update in published:
        if update.fixes:
            LATENCY.observe(max(0.0, (now - update.fixes[-1].received_at).total_seconds()))
