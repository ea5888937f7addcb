"""Off-route detection, the pure part: a route version's legs as polylines, and the per-driver
state machine stepped fix by fix (no I/O, no clock: times are the fixes' own).

A driver follows its *current leg*: the first leg at first, then whichever later leg it is
seen on (a driver never goes back to an earlier leg of the same version). Each fix's snapped
position is compared with the legs from the current one on:

* within ``rejoin_m`` of a leg: on the route (that leg becomes the current one), any off-route
  episode ends and may fire again later;
* farther than ``off_m`` from all of them: off the route; the episode starts at this fix
  unless it had started already;
* in between: nothing changes (hysteresis: a driver drifting around the threshold neither
  leaves nor rejoins the route on noise).

An episode that lasts ``after_ms`` fires once: one :class:`OffRoute` per episode per version.
A new version (another route id or version number) starts the state afresh on its first leg.
Fixes before the route's planned start, and fixes not newer than the last one seen, are
ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from lastmile.common.v1 import route_pb2

from core.geo import M_PER_DEG_LAT, LatLng, bounds_of, distance_to_polyline_m


@dataclass(frozen=True, slots=True)
class LegLine:
    """One leg's geometry, with its bounding box to rule far legs out cheaply."""

    points: tuple[LatLng, ...]
    south: float
    west: float
    north: float
    east: float

    @classmethod
    def of(cls, points: Sequence[LatLng]) -> LegLine:
        """The leg through ``points`` (at least one)."""
        box = bounds_of(points)
        return cls(tuple(points), box.south, box.west, box.north, box.east)

    def distance_m(self, point: LatLng, cutoff_m: float) -> float:
        """Distance from ``point`` to the leg; ``math.inf`` when the box alone shows it is
        farther than ``cutoff_m``."""
        margin_lat = cutoff_m / M_PER_DEG_LAT
        margin_lng = margin_lat / max(0.01, math.cos(math.radians(point.lat)))
        if not (
            self.south - margin_lat <= point.lat <= self.north + margin_lat
            and self.west - margin_lng <= point.lng <= self.east + margin_lng
        ):
            return math.inf
        return distance_to_polyline_m(point, self.points)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a driver should be driving: one route version's non-empty legs, in order."""

    route_id: str
    version: int
    start_ms: int
    legs: tuple[LegLine, ...]


def plan_of(route: route_pb2.Route) -> Plan:
    """The plan of a pushed Route message (legs of completed stops are empty and skipped)."""
    start_ms = route.planned_start.ToMilliseconds() if route.HasField("planned_start") else 0
    legs = tuple(
        LegLine.of([LatLng(p.lat, p.lng) for p in leg.geometry])
        for leg in route.legs
        if leg.geometry
    )
    return Plan(route.route_id, route.version, start_ms, legs)


@dataclass(frozen=True, slots=True)
class Limits:
    """The thresholds (Settings.off_route_*)."""

    off_m: float
    rejoin_m: float
    after_ms: int


@dataclass(frozen=True, slots=True)
class Guidance:
    """One driver's state against one route version. ``off_since_ms`` is 0 while on route."""

    route_id: str = ""
    version: int = 0
    leg: int = 0
    off_since_ms: int = 0
    fired: bool = False
    seen_ms: int = 0

    def encode(self) -> dict[str, str]:
        """Plain fields for a Redis hash."""
        return {
            "route_id": self.route_id,
            "version": str(self.version),
            "leg": str(self.leg),
            "off_since_ms": str(self.off_since_ms),
            "fired": "1" if self.fired else "0",
            "seen_ms": str(self.seen_ms),
        }

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> Guidance:
        """Back from :meth:`encode` (a fresh state when empty or unreadable)."""
        try:
            return cls(
                route_id=fields["route_id"],
                version=int(fields["version"]),
                leg=int(fields["leg"]),
                off_since_ms=int(fields["off_since_ms"]),
                fired=fields["fired"] == "1",
                seen_ms=int(fields["seen_ms"]),
            )
        except (KeyError, ValueError):
            return cls()


@dataclass(frozen=True, slots=True)
class OffRoute:
    """An episode that lasted long enough: where and when, and how far from the leg."""

    position: LatLng
    at_ms: int
    distance_m: float


def locate(plan: Plan, first: int, point: LatLng, limits: Limits) -> tuple[int, float]:
    """(leg, distance): the first leg from ``first`` on within ``rejoin_m`` of ``point``, else
    the nearest one (``math.inf`` when every leg is farther than ``off_m``)."""
    best_leg, best = first, math.inf
    for index in range(first, len(plan.legs)):
        distance = plan.legs[index].distance_m(point, limits.off_m)
        if distance < best:
            best_leg, best = index, distance
        if distance <= limits.rejoin_m:
            break
    return best_leg, best


def step(
    state: Guidance, plan: Plan, point: LatLng, at_ms: int, limits: Limits
) -> tuple[Guidance, OffRoute | None]:
    """The state after one fix at ``point`` (snapped when it could be), and the event to
    publish if this fix makes an episode long enough (see the module doc)."""
    if (state.route_id, state.version) != (plan.route_id, plan.version):
        state = Guidance(plan.route_id, plan.version)
    if not plan.legs or at_ms <= state.seen_ms or at_ms < plan.start_ms:
        return state, None
    leg, distance = locate(plan, min(state.leg, len(plan.legs) - 1), point, limits)
    state = replace(state, seen_ms=at_ms)
    if distance <= limits.rejoin_m:
        return replace(state, leg=leg, off_since_ms=0, fired=False), None
    if distance <= limits.off_m and not state.off_since_ms:
        return state, None
    state = replace(state, off_since_ms=state.off_since_ms or at_ms)
    if state.fired or at_ms - state.off_since_ms < limits.after_ms:
        return state, None
    if math.isinf(distance):
        distance = distance_to_polyline_m(point, plan.legs[state.leg].points)
    return replace(state, fired=True), OffRoute(point, at_ms, distance)
