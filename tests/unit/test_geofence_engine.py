"""The geofence state machine: hysteresis against edge noise, one event per transition,
minimum dwell."""

from __future__ import annotations

import random

from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.geo import LatLng
from core.settings import Settings
from tests.helpers import east_of
from tracking.geofence_engine import DWELL, ENTER, EXIT, Inside, Margins, margins, step
from tracking.geofences import Fence, fence_from_proto

SETTINGS = Settings()
CENTER = LatLng(35.8989, 14.5146)  # Valletta


def _fence(radius_m: float = 100.0, min_dwell_s: int = 60) -> Fence:
    message = tracking_pb2.Geofence(
        circle=common_pb2.Circle(
            center=common_pb2.LatLng(lat=CENTER.lat, lng=CENTER.lng), radius_m=radius_m
        ),
        min_dwell=Duration(seconds=min_dwell_s),
    )
    return fence_from_proto(message, SETTINGS, "gf_test")


def _run(fence: Fence, track: list[tuple[int, LatLng, float]]) -> list[tuple[int, int]]:
    """(time ms, event kind) of every event along ``track`` of (ms, position, accuracy)."""
    state: Inside | None = None
    events = []
    for at_ms, position, accuracy in track:
        bounds = margins(
            accuracy,
            SETTINGS.geofence_enter_margin_m,
            SETTINGS.geofence_exit_margin_m,
            fence.circle.radius_m if fence.circle else None,
        )
        state, kinds = step(
            state, fence.signed_distance_m(position), at_ms, bounds, fence.min_dwell_s * 1000
        )
        events += [(at_ms, kind) for kind in kinds]
    return events


def test_clean_pass_enters_dwells_and_exits_exactly_once() -> None:
    fence = _fence(radius_m=100.0, min_dwell_s=60)
    # Drive in from 300 m east, stop at the centre for two minutes, drive out west.
    track = [(i * 1000, east_of(CENTER, 300 - 10 * i), 5.0) for i in range(30)]
    track += [(30_000 + i * 5000, CENTER, 5.0) for i in range(1, 25)]
    track += [(150_000 + i * 1000, east_of(CENTER, -10 * i), 5.0) for i in range(1, 31)]
    kinds = [kind for _, kind in _run(fence, track)]
    assert kinds == [ENTER, DWELL, EXIT]


def test_noisy_track_along_the_edge_does_not_flap() -> None:
    fence = _fence(radius_m=100.0, min_dwell_s=0)
    rng = random.Random(7)
    # Ten minutes hugging the boundary with +-8 m of GPS noise: never deep enough to enter.
    track = [(i * 1000, east_of(CENTER, 100 + rng.uniform(-8, 8)), 8.0) for i in range(600)]
    assert _run(fence, track) == []


def test_noise_after_entering_does_not_exit() -> None:
    fence = _fence(radius_m=100.0, min_dwell_s=0)
    rng = random.Random(11)
    track = [(0, east_of(CENTER, 50), 5.0)]  # clearly inside
    # Then wandering around the edge, up to 20 m outside: inside the exit margin (25 m).
    track += [(i * 1000, east_of(CENTER, 100 + rng.uniform(-20, 20)), 5.0) for i in range(1, 600)]
    assert [kind for _, kind in _run(fence, track)] == [ENTER]


def test_min_dwell_is_respected() -> None:
    fence = _fence(radius_m=100.0, min_dwell_s=120)
    track = [(i * 10_000, CENTER, 5.0) for i in range(20)]  # 190 s inside, a fix every 10 s
    events = _run(fence, track)
    assert [kind for _, kind in events] == [ENTER, DWELL]
    assert events[1][0] == 120_000  # the first fix at least 120 s after entering


def test_short_stay_gives_no_dwell() -> None:
    fence = _fence(radius_m=100.0, min_dwell_s=120)
    track = [(i * 10_000, CENTER, 5.0) for i in range(6)]  # 50 s inside
    track += [(60_000 + i * 10_000, east_of(CENTER, 200 + i), 5.0) for i in range(3)]
    assert [kind for _, kind in _run(fence, track)] == [ENTER, EXIT]


def test_poor_accuracy_widens_the_margins() -> None:
    bounds = margins(40.0, 10.0, 25.0)
    assert bounds == Margins(40.0, 40.0)
    # A fix 30 m inside with 40 m accuracy proves nothing.
    assert step(None, -30.0, 0, bounds, 0) == (None, [])
    assert step(None, -41.0, 0, bounds, 0) == (Inside(0), [ENTER])


def test_small_circle_can_still_be_entered() -> None:
    bounds = margins(5.0, 10.0, 25.0, depth_m=12.0)
    assert bounds.enter_m == 6.0
    assert step(None, -8.0, 0, bounds, 0)[1] == [ENTER]


def test_state_round_trips_through_its_text_form() -> None:
    state = Inside(1_700_000_000_123, dwelled=True)
    assert Inside.decode(state.encode()) == state
    assert Inside.decode("garbage") is None
