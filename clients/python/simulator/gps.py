"""Moving along a road route and what a phone's GPS makes of it.

:class:`RoutePath` is a polyline with, per stretch, the road's speed (from OSRM's steps: each
step's distance over its duration) so a driver slows in town and speeds up on main roads.
:class:`GpsNoise` turns a true position into a fix: Gaussian horizontal error of the scenario's
standard deviation, with an occasional outlier ten times as far.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from core.geo import LatLng, haversine_m

METRES_PER_DEG_LAT = 111_320.0
# A road OSRM gives no usable speed for (zero-duration steps): a town speed.
FALLBACK_SPEED_MPS = 8.0


def offset(point: LatLng, north_m: float, east_m: float) -> LatLng:
    """``point`` moved by metres north and east (flat-earth: fine over GPS error scales)."""
    lat = point.lat + north_m / METRES_PER_DEG_LAT
    lng = point.lng + east_m / (METRES_PER_DEG_LAT * max(0.01, math.cos(math.radians(point.lat))))
    return LatLng(max(-90.0, min(90.0, lat)), max(-180.0, min(180.0, lng)))


def bearing_deg(a: LatLng, b: LatLng) -> float:
    """Initial course from ``a`` to ``b``, degrees clockwise from north."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dlmb = math.radians(b.lng - a.lng)
    y = math.sin(dlmb) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlmb)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass(frozen=True, slots=True)
class Fix:
    """One simulated GPS reading (position with error, its claimed accuracy)."""

    position: LatLng
    accuracy_m: float
    speed_mps: float
    heading_deg: float


class GpsNoise:
    """Horizontal GPS error: N(0, sigma) per axis, outliers at 10 sigma."""

    def __init__(self, sigma_m: float, outlier_rate: float, rng: random.Random) -> None:
        self.sigma_m = sigma_m
        self.outlier_rate = outlier_rate
        self._rng = rng

    def observe(self, truth: LatLng, speed_mps: float, heading_deg: float) -> Fix:
        """A fix of ``truth``; the accuracy claimed is the model's sigma (as phones do)."""
        scale = self.sigma_m * (10.0 if self._rng.random() < self.outlier_rate else 1.0)
        north, east = self._rng.gauss(0.0, scale), self._rng.gauss(0.0, scale)
        return Fix(offset(truth, north, east), max(1.0, self.sigma_m), speed_mps, heading_deg)


class RoutePath:
    """A route's geometry with cumulative distances and per-stretch road speeds."""

    def __init__(
        self,
        points: Sequence[LatLng],
        speed_breaks: Sequence[tuple[float, float]] = (),
    ) -> None:
        """``speed_breaks``: (distance from the start where a stretch begins, its speed in
        m/s), sorted; none = the fallback speed everywhere."""
        if len(points) < 2:
            points = [points[0], points[0]] if points else [LatLng(0.0, 0.0)] * 2
        self.points = list(points)
        self.cumulative = [0.0]
        for a, b in zip(self.points, self.points[1:], strict=False):
            self.cumulative.append(self.cumulative[-1] + haversine_m(a, b))
        self._break_at = [at for at, _ in speed_breaks] or [0.0]
        self._speed = [s if s > 0.5 else FALLBACK_SPEED_MPS for _, s in speed_breaks] or [
            FALLBACK_SPEED_MPS
        ]

    @property
    def length_m(self) -> float:
        """Length along the road."""
        return self.cumulative[-1]

    def speed_at(self, distance_m: float) -> float:
        """Road speed (m/s) at a distance along the path."""
        index = max(0, bisect.bisect_right(self._break_at, distance_m) - 1)
        return self._speed[index]

    def position_at(self, distance_m: float) -> tuple[LatLng, float]:
        """Position and heading at a distance along the path (clamped to its ends)."""
        d = min(max(0.0, distance_m), self.length_m)
        i = min(len(self.points) - 2, max(0, bisect.bisect_right(self.cumulative, d) - 1))
        a, b = self.points[i], self.points[i + 1]
        span = self.cumulative[i + 1] - self.cumulative[i]
        f = 0.0 if span <= 0 else (d - self.cumulative[i]) / span
        here = LatLng(a.lat + (b.lat - a.lat) * f, a.lng + (b.lng - a.lng) * f)
        return here, bearing_deg(a, b)
