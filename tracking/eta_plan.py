"""ETA arithmetic (pure): the stops left to a driver, and arrivals along one OSRM route.

Stops come from the driver's planned route (``route_stops`` not yet completed, in order) when
there is one; otherwise from its active orders: the pickup while it lies ahead, then the
drop-off. An order's ETA is the arrival at its drop-off: the drive through every stop before
it plus the service time spent at each of them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lastmile.common.v1 import route_pb2

from core.geo import LatLng
from core.roads import Route
from tracking.active_orders import BEFORE_PICKUP, ActiveOrder

PICKUP = route_pb2.STOP_KIND_PICKUP
DROP_OFF = route_pb2.STOP_KIND_DROP_OFF


@dataclass(frozen=True, slots=True)
class Stop:
    """One place the driver still has to visit."""

    position: LatLng
    kind: int
    order_id: str
    service_s: float


@dataclass(frozen=True, slots=True)
class OrderEta:
    """The estimate for one order's drop-off."""

    order_id: str
    arrival: dt.datetime
    remaining_s: float
    remaining_m: float
    line: tuple[LatLng, ...]


def stops_from_orders(
    orders: Sequence[ActiveOrder], pickup_service_s: float, drop_off_service_s: float
) -> list[Stop]:
    """Stops without a planned route: each order's pickup (if ahead), then its drop-off."""
    stops: list[Stop] = []
    for order in orders:
        if order.status in BEFORE_PICKUP:
            stops.append(Stop(order.pickup, PICKUP, order.order_id, pickup_service_s))
        stops.append(Stop(order.drop_off, DROP_OFF, order.order_id, drop_off_service_s))
    return stops


def estimate(
    route: Route, stops: Sequence[Stop], now: dt.datetime, wanted: set[str]
) -> list[OrderEta]:
    """ETAs of the ``wanted`` orders' drop-offs along ``route`` (start, then ``stops``)."""
    elapsed_s, distance_m, cut = 0.0, 0.0, 0
    estimates: list[OrderEta] = []
    for index, (leg, stop) in enumerate(zip(route.legs, stops, strict=False)):
        elapsed_s += leg.duration_s
        distance_m += leg.distance_m
        end = _nearest_index(route.geometry, route.waypoints[index + 1].location, cut)
        if stop.kind == DROP_OFF and stop.order_id in wanted:
            estimates.append(
                OrderEta(
                    order_id=stop.order_id,
                    arrival=now + dt.timedelta(seconds=elapsed_s),
                    remaining_s=elapsed_s,
                    remaining_m=distance_m,
                    line=route.geometry[: end + 1],
                )
            )
        cut = end
        elapsed_s += stop.service_s
    return estimates


def _nearest_index(line: Sequence[LatLng], target: LatLng, start: int) -> int:
    """Index of the point of ``line`` (from ``start`` on) nearest to ``target``."""
    best, best_d = start, math.inf
    scale = math.cos(math.radians(target.lat))
    for index in range(start, len(line)):
        point = line[index]
        d = (point.lat - target.lat) ** 2 + ((point.lng - target.lng) * scale) ** 2
        if d < best_d:
            best, best_d = index, d
    return best


def line_continues(old: Sequence[LatLng], new: Sequence[LatLng], decimals: int = 5) -> bool:
    """Whether ``new`` is ``old`` with only its start moved: the driver follows the line."""
    if len(new) < 3 or len(old) < len(new) - 2:
        return False
    tail = [(round(p.lat, decimals), round(p.lng, decimals)) for p in new[2:]]
    old_tail = [(round(p.lat, decimals), round(p.lng, decimals)) for p in old[-len(tail) :]]
    return tail == old_tail
