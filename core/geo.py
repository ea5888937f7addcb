"""Points on the Earth and distances between them."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# --- areas -------------------------------------------------------------------------------
# Areas are city-sized: within one, a local equirectangular projection around a reference
# point is accurate to well under a metre, which is all geofences and searches need.

M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0


@dataclass(frozen=True, slots=True)
class Bounds:
    """A rectangle aligned with meridians and parallels (no antimeridian crossing)."""

    south: float
    west: float
    north: float
    east: float

    @property
    def center(self) -> LatLng:
        """The middle of the rectangle in degrees."""
        return LatLng((self.south + self.north) / 2, (self.west + self.east) / 2)

    def contains(self, point: LatLng) -> bool:
        """Whether ``point`` lies inside or on the edge."""
        return self.south <= point.lat <= self.north and self.west <= point.lng <= self.east

    def size_m(self) -> tuple[float, float]:
        """(width, height) in metres; the width is taken at the parallel nearest the equator,
        the widest one, so a box of that size around the centre covers the rectangle."""
        widest_lat = (
            0.0 if self.south <= 0.0 <= self.north else min(abs(self.south), abs(self.north))
        )
        width = (self.east - self.west) * M_PER_DEG_LAT * math.cos(math.radians(widest_lat))
        return width, (self.north - self.south) * M_PER_DEG_LAT


def bounds_of(points: Sequence[LatLng]) -> Bounds:
    """The smallest rectangle holding every point."""
    lats = [p.lat for p in points]
    lngs = [p.lng for p in points]
    return Bounds(min(lats), min(lngs), max(lats), max(lngs))


def _project(origin: LatLng, point: LatLng) -> tuple[float, float]:
    """(x east, y north) in metres of ``point`` seen from ``origin``."""
    x = (point.lng - origin.lng) * M_PER_DEG_LAT * math.cos(math.radians(origin.lat))
    return x, (point.lat - origin.lat) * M_PER_DEG_LAT


def point_in_polygon(point: LatLng, vertices: Sequence[LatLng]) -> bool:
    """Whether ``point`` is inside the polygon (even-odd rule; first vertex not repeated)."""
    inside = False
    count = len(vertices)
    for i in range(count):
        a, b = vertices[i], vertices[(i + 1) % count]
        if (a.lat > point.lat) != (b.lat > point.lat):
            cross_lng = a.lng + (point.lat - a.lat) * (b.lng - a.lng) / (b.lat - a.lat)
            if point.lng < cross_lng:
                inside = not inside
    return inside


def _origin_to_segment_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from (0, 0) to the segment ``a``-``b`` (projected metres)."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    # Foot of the perpendicular from the origin (the point), clamped to the segment.
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


def distance_to_boundary_m(point: LatLng, vertices: Sequence[LatLng]) -> float:
    """Shortest distance in metres from ``point`` to the polygon's edges."""
    best = math.inf
    count = len(vertices)
    for i in range(count):
        a, b = _project(point, vertices[i]), _project(point, vertices[(i + 1) % count])
        best = min(best, _origin_to_segment_m(a, b))
    return best


def distance_to_polyline_m(point: LatLng, line: Sequence[LatLng]) -> float:
    """Shortest distance in metres from ``point`` to the open polyline ``line`` (to its only
    point when it has one; infinite when it is empty)."""
    if not line:
        return math.inf
    previous = _project(point, line[0])
    best = math.hypot(*previous)
    for vertex in line[1:]:
        current = _project(point, vertex)
        best = min(best, _origin_to_segment_m(previous, current))
        previous = current
    return best


def signed_distance_to_polygon_m(point: LatLng, vertices: Sequence[LatLng]) -> float:
    """Distance to the boundary, negative inside: how far in (or out) a position is."""
    edge = distance_to_boundary_m(point, vertices)
    return -edge if point_in_polygon(point, vertices) else edge


def polygon_problem(vertices: Sequence[LatLng]) -> str | None:
    """Why ``vertices`` is not a usable simple polygon, or None when it is.

    Checks: at least 3 distinct vertices, a non-zero area, and no two non-adjacent edges
    crossing or touching (a self-intersecting ring has no clear inside).
    """
    ring = list(vertices)
    if len(ring) > 3 and ring[0] == ring[-1]:
        ring.pop()  # a closed ring (GeoJSON habit) is the same polygon
    if len(set(ring)) < 3:
        return "a polygon needs at least 3 distinct vertices"
    origin = ring[0]
    xy = [_project(origin, v) for v in ring]
    count = len(xy)
    for i in range(count):
        for j in range(i + 1, count):
            if j == i + 1 or (i == 0 and j == count - 1):
                continue  # adjacent edges share a vertex by design
            if _segments_meet(xy[i], xy[(i + 1) % count], xy[j], xy[(j + 1) % count]):
                return f"the polygon intersects itself (edges {i} and {j})"
    area2 = sum(
        xy[i][0] * xy[(i + 1) % len(xy)][1] - xy[(i + 1) % len(xy)][0] * xy[i][1]
        for i in range(len(xy))
    )
    if abs(area2) < 1e-6:
        return "the polygon has no area (its vertices are on one line)"
    return None


def _orientation(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> int:
    value = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return 0 if abs(value) < 1e-9 else (1 if value > 0 else -1)


def _on_segment(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:
    """Whether collinear ``q`` lies within the bounding box of segment ``p``-``r``."""
    return min(p[0], r[0]) <= q[0] <= max(p[0], r[0]) and min(p[1], r[1]) <= q[1] <= max(p[1], r[1])


def _segments_meet(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    o1, o2, o3, o4 = (
        _orientation(a, b, c),
        _orientation(a, b, d),
        _orientation(c, d, a),
        _orientation(c, d, b),
    )
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(a, c, b))
        or (o2 == 0 and _on_segment(a, d, b))
        or (o3 == 0 and _on_segment(c, a, d))
        or (o4 == 0 and _on_segment(c, b, d))
    )


def polygon_centroid(vertices: Sequence[LatLng]) -> LatLng:
    """The area centroid of a simple polygon (the vertex mean when it has no area)."""
    origin = vertices[0]
    xy = [_project(origin, v) for v in vertices]
    area2 = cx = cy = 0.0
    for i in range(len(xy)):
        (x0, y0), (x1, y1) = xy[i], xy[(i + 1) % len(xy)]
        cross = x0 * y1 - x1 * y0
        area2 += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area2) < 1e-9:
        return LatLng(
            sum(v.lat for v in vertices) / len(vertices),
            sum(v.lng for v in vertices) / len(vertices),
        )
    x, y = cx / (3 * area2), cy / (3 * area2)
    return LatLng(
        origin.lat + y / M_PER_DEG_LAT,
        origin.lng + x / (M_PER_DEG_LAT * math.cos(math.radians(origin.lat))),
    )
