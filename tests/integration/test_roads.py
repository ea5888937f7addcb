"""OSRM over the default city (Malta) answers like a road network should."""

from __future__ import annotations

import pytest

from core.geo import LatLng, haversine_m
from core.roads import NoRoute, RoadNetwork

pytestmark = pytest.mark.integration

VALLETTA_CITY_GATE = LatLng(35.8960, 14.5110)
SLIEMA_FERRIES = LatLng(35.9126, 14.5045)
MDINA = LatLng(35.8860, 14.4030)
OPEN_SEA = LatLng(36.5, 14.0)  # ~50 km north-west of Gozo


def test_route_between_two_real_places(roads: RoadNetwork) -> None:
    route = roads.route([VALLETTA_CITY_GATE, SLIEMA_FERRIES], steps=True)

    assert 2_000 < route.distance_m < 20_000
    assert route.duration_s > 0
    assert haversine_m(route.geometry[0], VALLETTA_CITY_GATE) < 150
    assert haversine_m(route.geometry[-1], SLIEMA_FERRIES) < 150
    assert all(w.distance_m < 150 for w in route.waypoints)
    (leg,) = route.legs
    assert leg.distance_m == pytest.approx(route.distance_m)
    assert leg.steps[0].maneuver_type == "depart"
    assert leg.steps[-1].maneuver_type == "arrive"
    assert sum(s.distance_m for s in leg.steps) == pytest.approx(route.distance_m, rel=0.01)


def test_route_without_steps_has_no_steps(roads: RoadNetwork) -> None:
    route = roads.route([VALLETTA_CITY_GATE, SLIEMA_FERRIES, MDINA])
    assert len(route.legs) == 2
    assert all(leg.steps == () for leg in route.legs)


def test_table_is_square_with_zero_diagonal(roads: RoadNetwork) -> None:
    points = [VALLETTA_CITY_GATE, SLIEMA_FERRIES, MDINA]
    matrix = roads.table(points)

    assert len(matrix.durations_s) == 3
    assert all(len(row) == 3 for row in matrix.durations_s + matrix.distances_m)
    for i in range(3):
        assert matrix.durations_s[i][i] == 0
        assert matrix.distances_m[i][i] == 0
    assert all(
        cell is not None and cell > 0
        for cell in (matrix.durations_s[0][1], matrix.durations_s[1][0])
    )


def test_table_with_separate_destinations(roads: RoadNetwork) -> None:
    matrix = roads.table([VALLETTA_CITY_GATE], [SLIEMA_FERRIES, MDINA])
    assert len(matrix.durations_s) == 1
    assert len(matrix.durations_s[0]) == 2
    direct = roads.route([VALLETTA_CITY_GATE, SLIEMA_FERRIES])
    assert matrix.durations_s[0][0] == pytest.approx(direct.duration_s, rel=0.01)


def test_nearest_snaps_onto_a_nearby_street(roads: RoadNetwork) -> None:
    snap = roads.nearest(VALLETTA_CITY_GATE)
    assert snap.distance_m < 100
    assert haversine_m(snap.location, VALLETTA_CITY_GATE) == pytest.approx(snap.distance_m, abs=1)
    assert snap.name


def test_a_point_in_the_open_sea_has_no_route(roads: RoadNetwork) -> None:
    with pytest.raises(NoRoute):
        roads.route([VALLETTA_CITY_GATE, OPEN_SEA])
    with pytest.raises(NoRoute):
        roads.nearest(OPEN_SEA)


def test_without_a_snap_limit_osrm_snaps_the_sea_to_the_coast(road_graph: object) -> None:
    # What OSRM itself does, and why RoadNetwork bounds snapping by default.
    unbounded = RoadNetwork(str(road_graph), max_snap_m=None)
    snap = unbounded.nearest(OPEN_SEA)
    assert snap.distance_m > 10_000


def test_match_pulls_a_noisy_trace_onto_the_road(roads: RoadNetwork) -> None:
    route = roads.route([VALLETTA_CITY_GATE, SLIEMA_FERRIES])
    # Every few vertices of the real route, pushed ~15 m off it, 5 s apart.
    trace = [
        LatLng(p.lat + (0.00012 if i % 2 else -0.00012), p.lng + 0.00008)
        for i, p in enumerate(route.geometry[::4][:15])
    ]
    timestamps = [1_700_000_000 + 5 * i for i in range(len(trace))]

    snaps = roads.match(trace, timestamps, accuracy_m=20)

    assert len(snaps) == len(trace)
    matched = [(p, s) for p, s in zip(trace, snaps, strict=True) if s is not None]
    assert len(matched) >= len(trace) * 0.8
    for point, snap in matched:
        assert snap.distance_m < 40
        assert haversine_m(point, snap.location) == pytest.approx(snap.distance_m, abs=1)
