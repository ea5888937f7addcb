"""Area geometry: point in polygon, boundary distances, polygon validity, boxes."""

from __future__ import annotations

import pytest

from core.geo import (
    Bounds,
    LatLng,
    distance_to_boundary_m,
    point_in_polygon,
    polygon_centroid,
    polygon_problem,
    signed_distance_to_polygon_m,
)

# A square of about 1.1 km around a point of Valletta.
SQUARE = [LatLng(35.89, 14.50), LatLng(35.89, 14.51), LatLng(35.90, 14.51), LatLng(35.90, 14.50)]


def test_point_in_polygon_inside_outside_and_concave() -> None:
    assert point_in_polygon(LatLng(35.895, 14.505), SQUARE)
    assert not point_in_polygon(LatLng(35.905, 14.505), SQUARE)
    # An L shape: the notch is outside.
    ell = [LatLng(0, 0), LatLng(0, 2), LatLng(1, 2), LatLng(1, 1), LatLng(2, 1), LatLng(2, 0)]
    assert point_in_polygon(LatLng(0.5, 1.5), ell)
    assert not point_in_polygon(LatLng(1.5, 1.5), ell)


def test_signed_distance_is_negative_inside() -> None:
    # 0.001 deg of latitude is ~111 m.
    inside = signed_distance_to_polygon_m(LatLng(35.891, 14.505), SQUARE)
    outside = signed_distance_to_polygon_m(LatLng(35.889, 14.505), SQUARE)
    assert inside == pytest.approx(-111.2, abs=1.0)
    assert outside == pytest.approx(111.2, abs=1.0)
    assert distance_to_boundary_m(LatLng(35.89, 14.505), SQUARE) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize(
    ("vertices", "problem"),
    [
        ([LatLng(0, 0), LatLng(0, 1)], "at least 3"),
        ([LatLng(0, 0), LatLng(0, 1), LatLng(0, 2)], "no area"),
        ([LatLng(0, 0), LatLng(1, 1), LatLng(0, 1), LatLng(1, 0)], "intersects itself"),
    ],
)
def test_bad_polygons_are_named(vertices: list[LatLng], problem: str) -> None:
    found = polygon_problem(vertices)
    assert found is not None and problem in found


def test_good_polygons_pass_even_closed() -> None:
    assert polygon_problem(SQUARE) is None
    assert polygon_problem([*SQUARE, SQUARE[0]]) is None


def test_centroid_and_bounds() -> None:
    centroid = polygon_centroid(SQUARE)
    assert centroid.lat == pytest.approx(35.895, abs=1e-6)
    assert centroid.lng == pytest.approx(14.505, abs=1e-6)
    box = Bounds(35.89, 14.50, 35.90, 14.51)
    width, height = box.size_m()
    assert height == pytest.approx(1112, abs=2)
    assert width == pytest.approx(901, abs=2)
    assert box.contains(centroid) and not box.contains(LatLng(35.91, 14.505))
