"""Points on the Earth and distances between them."""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


@dataclass(frozen=True, slots=True)
class LatLng:
    """A WGS 84 position in degrees. Note the order: latitude first, unlike GeoJSON and OSRM."""

    lat: float
    lng: float

    def __post_init__(self) -> None:
        """Reject positions outside the valid ranges (NaN included)."""
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lng <= 180.0):
            raise ValueError(f"invalid position lat={self.lat} lng={self.lng}")

    def lnglat(self) -> tuple[float, float]:
        """``(lng, lat)``: the order OSRM and GeoJSON use."""
        return (self.lng, self.lat)

    @classmethod
    def from_lnglat(cls, pair: tuple[float, float] | list[float]) -> LatLng:
        """Build from an OSRM or GeoJSON ``[lng, lat]`` pair."""
        return cls(lat=float(pair[1]), lng=float(pair[0]))


def haversine_m(a: LatLng, b: LatLng) -> float:
    """Great-circle distance in metres (spherical Earth: error below 0.5%)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlmb = math.radians(b.lng - a.lng)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
