"""The city's roads as vector data for the browser base maps, read once from the OSM extract.

The apps draw their base map from these lines, so the maps work with no internet. The
extract is parsed once (pyosmium, node locations kept in memory: a city extract is small),
every road is bucketed into a grid of cells, and a bounding-box query returns GeoJSON
LineStrings, thinned by zoom: minor roads only when zoomed in, vertices closer than about
a pixel dropped.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import osmium

# Road classes by the lowest zoom that shows them (major roads first, service roads last).
CLASS_MIN_ZOOM: dict[str, int] = {
    "motorway": 0,
    "trunk": 0,
    "primary": 0,
    "motorway_link": 11,
    "trunk_link": 11,
    "primary_link": 12,
    "secondary": 10,
    "secondary_link": 13,
    "tertiary": 12,
    "tertiary_link": 14,
    "residential": 13,
    "unclassified": 13,
    "living_street": 14,
    "pedestrian": 15,
    "service": 15,
}
# Side of one grid cell in degrees (about 2 km): small enough that a query touches few.
CELL_DEG = 0.02
# Tolerance of the line thinning, in pixels at the requested zoom.
SIMPLIFY_PX = 0.7
# Coordinates sent to the browser: 6 decimals is about 10 cm.
DECIMALS = 6

Point = tuple[float, float]  # (lng, lat), GeoJSON order
BBox = tuple[float, float, float, float]  # min lng, min lat, max lng, max lat


@dataclass(frozen=True, slots=True)
class Road:
    """One OSM way drawn as a road."""

    kind: str
    name: str
    points: tuple[Point, ...]
    bbox: BBox


class _RoadReader(osmium.SimpleHandler):
    """Collects the ways of the drawn road classes with their node locations."""

    def __init__(self) -> None:
        super().__init__()
        self.roads: list[Road] = []

    def way(self, way: osmium.osm.Way) -> None:
        kind = way.tags.get("highway")
        if kind not in CLASS_MIN_ZOOM:
            return
        points = tuple(
            (node.location.lon, node.location.lat) for node in way.nodes if node.location.valid()
        )
        if len(points) < 2:
            return
        lngs, lats = [p[0] for p in points], [p[1] for p in points]
        name = way.tags.get("name") or ""
        self.roads.append(Road(kind, name, points, (min(lngs), min(lats), max(lngs), max(lats))))


def parse_bbox(text: str) -> BBox:
    """``minLng,minLat,maxLng,maxLat`` as numbers; ValueError when malformed or inverted."""
    parts = [float(part) for part in text.split(",")]
    if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
        raise ValueError("bbox must be minLng,minLat,maxLng,maxLat")
    min_lng, min_lat, max_lng, max_lat = parts
    if not (-180 <= min_lng <= max_lng <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValueError("bbox corners out of range or inverted")
    return min_lng, min_lat, max_lng, max_lat


def _cells(bbox: BBox) -> Iterable[tuple[int, int]]:
    x0, y0 = math.floor(bbox[0] / CELL_DEG), math.floor(bbox[1] / CELL_DEG)
    x1, y1 = math.floor(bbox[2] / CELL_DEG), math.floor(bbox[3] / CELL_DEG)
    return ((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))


def _overlaps(a: BBox, b: BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _segment_distance(p: Point, a: Point, b: Point) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    if dx == 0 and dy == 0:
        return math.hypot(p[0] - a[0], p[1] - a[1])
    t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


def simplify(points: Sequence[Point], tolerance: float) -> list[Point]:
    """Douglas-Peucker thinning (iterative): keeps the ends and every vertex that bends the
    line by more than ``tolerance`` degrees."""
    if len(points) <= 2:
        return list(points)
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        worst, index = 0.0, -1
        for i in range(first + 1, last):
            distance = _segment_distance(points[i], points[first], points[last])
            if distance > worst:
                worst, index = distance, i
        if index >= 0 and worst > tolerance:
            keep[index] = True
            stack += [(first, index), (index, last)]
    return [p for p, kept in zip(points, keep, strict=True) if kept]


class RoadIndex:
    """Every drawn road of an extract, bucketed by grid cell."""

    def __init__(self, roads: Sequence[Road], cache_size: int = 512) -> None:
        """Index ``roads``; the last ``cache_size`` answers are kept (tiles repeat a lot)."""
        self.roads = list(roads)
        self._cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, road in enumerate(self.roads):
            for cell in _cells(road.bbox):
                self._cells[cell].append(index)
        self.geojson = lru_cache(maxsize=cache_size)(self._geojson)
        self.bounds: BBox = (
            min((r.bbox[0] for r in self.roads), default=-180.0),
            min((r.bbox[1] for r in self.roads), default=-85.0),
            max((r.bbox[2] for r in self.roads), default=180.0),
            max((r.bbox[3] for r in self.roads), default=85.0),
        )

    @classmethod
    def from_pbf(cls, pbf: Path, cache_size: int = 512) -> RoadIndex:
        """Read the roads of an ``.osm.pbf`` extract (a few seconds for a city)."""
        reader = _RoadReader()
        reader.apply_file(str(pbf), locations=True)
        return cls(reader.roads, cache_size)

    def query(self, bbox: BBox, zoom: int) -> list[Road]:
        """Roads shown at ``zoom`` that overlap ``bbox``, each once."""
        seen: set[int] = set()
        found: list[Road] = []
        for cell in _cells(bbox):
            for index in self._cells.get(cell, ()):
                road = self.roads[index]
                if index in seen or CLASS_MIN_ZOOM[road.kind] > zoom:
                    continue
                seen.add(index)
                if _overlaps(road.bbox, bbox):
                    found.append(road)
        return found

    def _geojson(self, bbox: BBox, zoom: int) -> bytes:
        # Degrees per pixel at this zoom (256-pixel tiles), times the tolerance in pixels.
        tolerance = SIMPLIFY_PX * 360.0 / (256 * 2**zoom)
        features = [
            {
                "type": "Feature",
                "properties": {"kind": road.kind, "name": road.name},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [
                        [round(lng, DECIMALS), round(lat, DECIMALS)]
                        for lng, lat in simplify(road.points, tolerance)
                    ],
                },
            }
            for road in self.query(bbox, zoom)
        ]
        collection = {"type": "FeatureCollection", "features": features}
        return json.dumps(collection, separators=(",", ":")).encode()
