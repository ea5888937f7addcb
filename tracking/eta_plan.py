"""ETA arithmetic (pure): the stops left to a driver, and arrivals along one OSRM route.

Stops come from the driver's planned route (``route_stops`` not yet completed, in order) when
there is one; otherwise from its active orders: the pickup while it lies ahead, then the
drop-off. An order's ETA is the arrival at its drop-off: the drive through every stop before
it plus the service time spent at each of them, and at a pickup the wait until the order is
ready (a kitchen still cooking holds the driver, and every stop after it).
"""

from __future__ import annotations

import datetime as dt
import json
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
    #: Service cannot start before this (a pickup's ready time); None: at arrival.
    ready: dt.datetime | None = None


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
            stops.append(
                Stop(order.pickup, PICKUP, order.order_id, pickup_service_s, order.ready_at)
            )
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
        if stop.ready is not None:
            elapsed_s = max(elapsed_s, (stop.ready - now).total_seconds())
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


def line_text(line: Sequence[LatLng]) -> str:
    """A line as stored with its order's ETA: JSON ``[[lat, lng], ...]``, 6 decimals."""
    return json.dumps([[round(p.lat, 6), round(p.lng, 6)] for p in line])


_BETWEEN_POINTS = "], ["


def line_continues(old_text: str, new_text: str) -> bool:
    """Whether the new line is the old one with only its start moved (the driver follows the
    line): from its third point on, the new line ends the old one.

    Both as :func:`line_text` gives them: a refresh compares its line with the stored one
    without parsing that back (hundreds of points, each refresh)."""
    second = new_text.find(_BETWEEN_POINTS)
    third = new_text.find(_BETWEEN_POINTS, second + 1) if second >= 0 else -1
    if third < 0:  # fewer than three points
        return False
    tail = new_text[third + len(_BETWEEN_POINTS) - 1 :]  # "[lat, lng], ...]"
    return old_text == "[" + tail or old_text.endswith(", " + tail)
