"""Off-route detection, pure parts: the point-to-polyline distance, leg boxes, and the state
machine (hysteresis, one event per episode, leg progress, new versions, stale fixes)."""

from __future__ import annotations

import math

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2, route_pb2

from core.geo import LatLng, distance_to_polyline_m, haversine_m
from tracking.off_route_plan import Guidance, LegLine, Limits, Plan, locate, plan_of, step

# 0.001 deg of latitude is ~111.2 m; along 35.9 N, 0.001 deg of longitude is ~90.1 m.
M_PER_MILLI_LAT = 111.195
LIMITS = Limits(off_m=50.0, rejoin_m=25.0, after_ms=20_000)
# Two legs: east along 35.900 N, then north along 14.510 E.
EAST = LegLine.of([LatLng(35.900, 14.500), LatLng(35.900, 14.505), LatLng(35.900, 14.510)])
NORTH = LegLine.of([LatLng(35.900, 14.510), LatLng(35.905, 14.510)])
PLAN = Plan("rte-1", 3, 0, (EAST, NORTH))
T0 = 1_700_000_000_000


def north_of_east_leg(metres: float, lng: float = 14.503) -> LatLng:
    """A point ``metres`` north of the first leg."""
    return LatLng(35.900 + metres / M_PER_MILLI_LAT / 1000, lng)


def test_polyline_distance_to_segments_vertices_and_ends() -> None:
    line = [LatLng(35.90, 14.50), LatLng(35.90, 14.51)]
    # Perpendicular foot inside the segment.
    assert distance_to_polyline_m(LatLng(35.901, 14.505), line) == pytest.approx(111.2, abs=0.5)
    # Beyond the end: the distance to the end point, not to the infinite line.
    beyond = LatLng(35.90, 14.52)
    assert distance_to_polyline_m(beyond, line) == pytest.approx(
        haversine_m(beyond, line[-1]), rel=0.005
    )
    assert distance_to_polyline_m(LatLng(35.90, 14.505), line) == pytest.approx(0.0, abs=0.01)
    # A corner: the nearest of the two segments wins.
    corner = [*line, LatLng(35.91, 14.51)]
    assert distance_to_polyline_m(LatLng(35.905, 14.511), corner) == pytest.approx(90.1, abs=1.0)


def test_polyline_of_one_point_and_of_none() -> None:
    point = LatLng(35.90, 14.50)
    other = LatLng(35.901, 14.50)
    assert distance_to_polyline_m(other, [point]) == pytest.approx(haversine_m(point, other), 0.01)
    assert distance_to_polyline_m(other, []) == math.inf


def test_leg_box_rules_out_far_points_only() -> None:
    assert EAST.distance_m(north_of_east_leg(40), 50.0) == pytest.approx(40.0, abs=0.5)
    # Farther than the cutoff from the box: not computed.
    assert EAST.distance_m(north_of_east_leg(400), 50.0) == math.inf
    # Inside the widened box but off the line: computed exactly.
    assert EAST.distance_m(north_of_east_leg(45), 50.0) == pytest.approx(45.0, abs=0.5)


def test_locate_prefers_the_first_leg_the_point_is_on() -> None:
    assert locate(PLAN, 0, LatLng(35.900, 14.510), LIMITS)[0] == 0  # the joint: still leg 0
    leg, distance = locate(PLAN, 0, LatLng(35.903, 14.510), LIMITS)
    assert leg == 1 and distance == pytest.approx(0.0, abs=0.01)
    # Legs before the current one are not looked at.
    assert locate(PLAN, 1, north_of_east_leg(0), LIMITS)[1] > LIMITS.off_m


def run(
    points: list[tuple[LatLng, int]], state: Guidance | None = None, plan: Plan = PLAN
) -> tuple[Guidance, list[int]]:
    """Step through (point, seconds after T0); the seconds at which events fired."""
    current = state or Guidance()
    fired = []
    for point, second in points:
        current, event = step(current, plan, point, T0 + second * 1000, LIMITS)
        if event is not None:
            fired.append(second)
    return current, fired


def test_following_the_route_never_fires_and_progresses_legs() -> None:
    along = [(north_of_east_leg(3, 14.500 + k * 0.001), k) for k in range(11)]
    up = [(LatLng(35.900 + k * 0.0005, 14.510), 11 + k) for k in range(11)]
    state, fired = run(along + up)
    assert fired == [] and state.leg == 1 and state.off_since_ms == 0


def test_off_longer_than_the_threshold_fires_once() -> None:
    away = north_of_east_leg(200)
    state, fired = run([(north_of_east_leg(0), 0), *((away, s) for s in range(5, 60, 5))])
    assert fired == [25]  # off since 5 s, 20 s later
    assert state.fired and state.off_since_ms == T0 + 5000


def test_a_short_excursion_does_not_fire() -> None:
    away = north_of_east_leg(200)
    _, fired = run([(away, s) for s in range(0, 15, 5)] + [(north_of_east_leg(0), 15)])
    assert fired == []


def test_noise_between_the_thresholds_neither_leaves_nor_rejoins() -> None:
    band = north_of_east_leg(35)  # farther than rejoin_m, closer than off_m
    state, fired = run([(band, s) for s in range(0, 100, 5)])
    assert fired == [] and state.off_since_ms == 0  # on stays on
    away = north_of_east_leg(200)
    # Off, then drifting in the band: still off, so the episode goes on and fires.
    state, fired = run([(away, 0), *((band, s) for s in range(5, 30, 5))])
    assert fired == [20] and state.off_since_ms == T0


def test_rejoining_re_arms_and_a_new_episode_fires_again() -> None:
    away, on = north_of_east_leg(200), north_of_east_leg(2)
    points = (
        [(away, s) for s in range(0, 25, 5)] + [(on, 30)] + [(away, s) for s in range(35, 60, 5)]
    )
    state, fired = run(points)
    assert fired == [20, 55]
    assert state.fired


def test_a_new_version_starts_afresh_on_its_first_leg() -> None:
    away = north_of_east_leg(200)
    state, fired = run([(away, s) for s in range(0, 25, 5)])
    assert fired == [20]
    # The recomputed version starts where the driver is: on it, nothing fires.
    rerouted = Plan("rte-1", 4, 0, (LegLine.of([away, LatLng(35.905, 14.510)]),))
    state, fired = run([(away, s) for s in range(30, 90, 5)], state, rerouted)
    assert fired == [] and state.version == 4 and not state.fired


def test_stale_fixes_and_fixes_before_the_start_are_ignored() -> None:
    away = north_of_east_leg(200)
    state, fired = run([(away, 10), (away, 5), (away, 10)])
    assert state.seen_ms == T0 + 10_000 and state.off_since_ms == T0 + 10_000 and fired == []
    later = Plan("rte-1", 3, T0 + 60_000, PLAN.legs)
    state, fired = run([(away, s) for s in range(0, 60, 5)], None, later)
    assert fired == [] and state.seen_ms == 0


def test_state_survives_encoding_and_bad_input_starts_fresh() -> None:
    state = Guidance("rte-1", 3, 1, T0, True, T0 + 5)
    assert Guidance.decode(state.encode()) == state
    assert Guidance.decode({}) == Guidance()
    assert Guidance.decode({**state.encode(), "leg": "x"}) == Guidance()


def test_plan_of_a_route_message_skips_empty_legs() -> None:
    route = route_pb2.Route(route_id="rte-9", version=2)
    route.legs.add()  # a completed stop's leg
    leg = route.legs.add()
    leg.geometry.extend(
        [common_pb2.LatLng(lat=35.9, lng=14.5), common_pb2.LatLng(lat=35.91, lng=14.5)]
    )
    start = Timestamp()
    start.FromMilliseconds(T0)
    route.planned_start.CopyFrom(start)
    plan = plan_of(route)
    assert (plan.route_id, plan.version, plan.start_ms, len(plan.legs)) == ("rte-9", 2, T0, 1)
    assert plan.legs[0].points[-1] == LatLng(35.91, 14.5)
