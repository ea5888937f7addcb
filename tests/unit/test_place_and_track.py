"""The integration example's reading of the customer's stream
(clients/python/examples/place_and_track.py): every kind of update becomes one line, and the
statuses that end an order are recognised."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType

from lastmile_client.lastmile.common.v1 import DeliveryInstructions, LatLng, OrderStatus
from lastmile_client.lastmile.tracking.v1 import (
    EtaUpdate,
    PositionUpdate,
    RouteLine,
    StatusEntry,
    TrackingSnapshot,
    TrackResponse,
)

REPO = Path(__file__).resolve().parents[2]


def _example() -> ModuleType:
    path = REPO / "clients" / "python" / "examples" / "place_and_track.py"
    spec = importlib.util.spec_from_file_location("place_and_track", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _example()


def test_each_kind_of_update_is_one_line() -> None:
    eta = dt.datetime(2026, 12, 2, 18, 5, 30, tzinfo=dt.UTC)
    snapshot = TrackingSnapshot(
        order_id="ord_1",
        status=OrderStatus.ASSIGNED,
        timeline=[
            StatusEntry(status=OrderStatus.PENDING),
            StatusEntry(status=OrderStatus.ASSIGNED),
        ],
    )
    cases = [
        (TrackResponse(snapshot=snapshot), ("snapshot: ASSIGNED, 2 steps", OrderStatus.ASSIGNED)),
        (
            TrackResponse(status=StatusEntry(status=OrderStatus.NEARBY)),
            ("status: NEARBY", OrderStatus.NEARBY),
        ),
        (
            TrackResponse(position=PositionUpdate(position=LatLng(lat=35.9, lng=14.51))),
            ("driver at 35.90000, 14.51000", None),
        ),
        (TrackResponse(eta=EtaUpdate(eta=eta)), ("arriving around 18:05:30 UTC", None)),
        (
            TrackResponse(route_line=RouteLine(points=[LatLng(lat=35.9, lng=14.5)] * 3)),
            ("route: 3 points left", None),
        ),
        (
            TrackResponse(instructions=DeliveryInstructions(text="gate 4711")),
            ("instructions changed", None),
        ),
    ]
    for update, expected in cases:
        assert EXAMPLE.describe(update) == expected


def test_the_example_stops_following_once_the_order_has_ended() -> None:
    assert OrderStatus.DELIVERED in EXAMPLE.ENDED
    assert OrderStatus.NEARBY not in EXAMPLE.ENDED
