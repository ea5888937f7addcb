"""Areas from requests (points, circles, boxes, polygons) checked and turned into geometry.

Every problem becomes :class:`core.errors.InvalidArgument` with a message naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lastmile.common.v1 import common_pb2

from core.errors import InvalidArgument
from core.geo import Bounds, LatLng, polygon_problem
from core.inputs import check_position
from core.settings import Settings


@dataclass(frozen=True, slots=True)
class CircleArea:
    """A circle on the ground."""

    center: LatLng
    radius_m: float


def point_from(message: common_pb2.LatLng, field: str) -> LatLng:
    """A valid position (finite, in range)."""
    check_position(message.lat, message.lng, field)
    return LatLng(message.lat, message.lng)


def circle_from(message: common_pb2.Circle, field: str, settings: Settings) -> CircleArea:
    """A circle with a positive, bounded radius."""
    if not message.HasField("center"):
        raise InvalidArgument(f"{field}.center is required")
    center = point_from(message.center, f"{field}.center")
    radius = message.radius_m
    if not math.isfinite(radius) or radius <= 0:
        raise InvalidArgument(f"{field}.radius_m must be a positive number of metres, got {radius}")
    if radius > settings.search_max_radius_m:
        raise InvalidArgument(
            f"{field}.radius_m {radius} exceeds the maximum {settings.search_max_radius_m} m"
        )
    return CircleArea(center, radius)


def box_from(message: common_pb2.BoundingBox, field: str, settings: Settings) -> Bounds:
    """A non-empty, bounded rectangle that does not cross the antimeridian."""
    if not (message.HasField("south_west") and message.HasField("north_east")):
        raise InvalidArgument(f"{field} needs both south_west and north_east")
    sw = point_from(message.south_west, f"{field}.south_west")
    ne = point_from(message.north_east, f"{field}.north_east")
    if sw.lat >= ne.lat:
        raise InvalidArgument(
            f"{field}: south_west.lat {sw.lat} must be below north_east.lat {ne.lat}"
        )
    if sw.lng >= ne.lng:
        raise InvalidArgument(
            f"{field}: south_west.lng {sw.lng} must be west of north_east.lng {ne.lng}"
            " (boxes across the antimeridian are not supported)"
        )
    bounds = Bounds(sw.lat, sw.lng, ne.lat, ne.lng)
    if max(bounds.size_m()) > 2 * settings.search_max_radius_m:
        raise InvalidArgument(
            f"{field} is larger than {2 * settings.search_max_radius_m:.0f} m on a side"
        )
    return bounds


def polygon_from(message: common_pb2.Polygon, field: str, settings: Settings) -> list[LatLng]:
    """A simple polygon (no self-intersection), first vertex not repeated."""
    count = len(message.vertices)
    if count > settings.search_max_vertices:
        raise InvalidArgument(
            f"{field} has {count} vertices; at most {settings.search_max_vertices} are allowed"
        )
    vertices = [point_from(v, f"{field}.vertices[{i}]") for i, v in enumerate(message.vertices)]
    if len(vertices) > 3 and vertices[0] == vertices[-1]:
        vertices.pop()
    problem = polygon_problem(vertices)
    if problem is not None:
        raise InvalidArgument(f"{field}: {problem}")
    if any(abs(v.lng - vertices[0].lng) > 180.0 for v in vertices):
        raise InvalidArgument(f"{field} crosses the antimeridian, which is not supported")
    return vertices
