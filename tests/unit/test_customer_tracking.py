"""Customer tracking pieces without servers: ETA arithmetic, token checks, bounded inboxes."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import tracking_pb2, tracking_service_pb2

from core.errors import NotFound, Unauthenticated
from core.geo import LatLng
from core.roads import Leg, Route, Snap
from tracking.active_orders import ActiveOrder
from tracking.channel_hub import Inbox
from tracking.customer_snapshot import EXPIRED_MESSAGE, NOT_FOUND_MESSAGE, check_token
from tracking.eta_plan import (
    DROP_OFF,
    PICKUP,
    estimate,
    line_continues,
    line_text,
    stops_from_orders,
)
from tracking.fanout import approximate

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
A, B, C = LatLng(35.890, 14.500), LatLng(35.895, 14.505), LatLng(35.900, 14.510)


def _order(order_id: str, status: int) -> ActiveOrder:
    return ActiveOrder(order_id, status, pickup=A, drop_off=C, route_id="")


def test_stops_put_the_pickup_first_only_while_it_lies_ahead() -> None:
    before = stops_from_orders([_order("o1", common_pb2.ORDER_STATUS_TO_PICKUP)], 120, 90)
    assert [(s.kind, s.service_s) for s in before] == [(PICKUP, 120), (DROP_OFF, 90)]
    after = stops_from_orders([_order("o1", common_pb2.ORDER_STATUS_PICKED_UP)], 120, 90)
    assert [s.kind for s in after] == [DROP_OFF]


def test_eta_adds_the_drive_and_the_service_times_of_earlier_stops() -> None:
    stops = stops_from_orders(
        [
            _order("o1", common_pb2.ORDER_STATUS_PICKED_UP),
            ActiveOrder("o2", common_pb2.ORDER_STATUS_PICKED_UP, A, B, ""),
        ],
        120,
        90,
    )
    route = Route(
        distance_m=3000,
        duration_s=300,
        geometry=(A, LatLng(35.892, 14.502), C, LatLng(35.897, 14.507), B),
        legs=(Leg(1000, 100, ()), Leg(2000, 200, ())),
        waypoints=(Snap(A, 0, ""), Snap(C, 0, ""), Snap(B, 0, "")),
    )
    first, second = estimate(route, stops, NOW, {"o1", "o2"})
    assert first.order_id == "o1" and first.arrival == NOW + dt.timedelta(seconds=100)
    assert first.line == (A, LatLng(35.892, 14.502), C) and first.remaining_m == 1000
    # The second drop-off waits for the first one's 90 s of service.
    assert second.arrival == NOW + dt.timedelta(seconds=100 + 90 + 200)
    assert second.remaining_m == 3000 and second.line[-1] == B


def _to_pickup_then_drop_off(ready_at: dt.datetime | None) -> list[Any]:
    """ETAs of one order whose pickup is 100 s away and its drop-off 200 s further."""
    order = ActiveOrder("o1", common_pb2.ORDER_STATUS_TO_PICKUP, B, C, "", ready_at)
    stops = stops_from_orders([order], 120, 90)
    route = Route(
        distance_m=3000,
        duration_s=300,
        geometry=(A, B, C),
        legs=(Leg(1000, 100, ()), Leg(2000, 200, ())),
        waypoints=(Snap(A, 0, ""), Snap(B, 0, ""), Snap(C, 0, "")),
    )
    return estimate(route, stops, NOW, {"o1"})


def test_a_driver_early_at_the_pickup_waits_until_the_order_is_ready() -> None:
    [unknown] = _to_pickup_then_drop_off(None)
    assert unknown.arrival == NOW + dt.timedelta(seconds=100 + 120 + 200)
    # Ready 10 minutes from now: the driver, there in 100 s, waits 500 s before the service.
    [cooking] = _to_pickup_then_drop_off(NOW + dt.timedelta(minutes=10))
    assert cooking.arrival == NOW + dt.timedelta(seconds=600 + 120 + 200)
    assert cooking.remaining_s == 600 + 120 + 200
    # Ready already, or by the time the driver gets there: no wait.
    for ready in (NOW - dt.timedelta(minutes=5), NOW + dt.timedelta(seconds=60)):
        [done] = _to_pickup_then_drop_off(ready)
        assert done.arrival == unknown.arrival


def test_the_ready_time_survives_the_active_orders_cache() -> None:
    ready = dt.datetime(2026, 5, 1, 12, 7, 30, 250000, tzinfo=dt.UTC)
    for order in (
        ActiveOrder("o1", common_pb2.ORDER_STATUS_TO_PICKUP, A, C, "r1", ready),
        ActiveOrder("o2", common_pb2.ORDER_STATUS_PICKED_UP, A, C, "", None),
    ):
        assert ActiveOrder.from_json(order.to_json()) == order


def test_a_line_continues_when_only_its_start_moved() -> None:
    old = line_text([A, LatLng(35.892, 14.502), B, C])
    moved = LatLng(35.891, 14.501)
    assert line_continues(old, line_text([moved, LatLng(35.892, 14.502), B, C]))
    assert line_continues(old, line_text([moved, moved, C]))  # a shorter tail of the old line
    assert line_continues(line_text([B, C]), line_text([moved, moved, B, C]))
    assert not line_continues(old, line_text([moved, LatLng(35.892, 14.502), A, C]))
    assert not line_continues(old, line_text([moved, moved, B]))  # B is not where old ends
    assert not line_continues(line_text([C]), line_text([moved, moved, B, C]))
    assert not line_continues("", line_text([A, B, C]))
    assert not line_continues(old, line_text([moved, C]))  # too short to tell


def test_customers_see_rounded_positions() -> None:
    shown = approximate(LatLng(35.8912345, 14.5016789), 4)
    assert (shown.lat, shown.lng) == (35.8912, 14.5017)


def _row(**changes: Any) -> dict[str, Any]:
    return {
        "order_id": "ord_1",
        "tracking_token_expires_at": None,
        "tracking_token_revoked": False,
        **changes,
    }


def test_token_checks_name_no_order() -> None:
    assert check_token(_row(), NOW).order_id == "ord_1"
    with pytest.raises(NotFound, match=NOT_FOUND_MESSAGE):
        check_token(None, NOW)
    for row in (
        _row(tracking_token_revoked=True),
        _row(tracking_token_expires_at=NOW - dt.timedelta(seconds=1)),
    ):
        with pytest.raises(Unauthenticated) as raised:
            check_token(row, NOW)
        assert str(raised.value) == EXPIRED_MESSAGE and "ord_1" not in str(raised.value)


def _position(lat: float) -> tracking_service_pb2.TrackResponse:
    response = tracking_service_pb2.TrackResponse()
    response.position.position.lat = lat
    return response


def _drain(inbox: Inbox) -> list[str]:
    async def run() -> list[str]:
        got = []
        while (item := await inbox.get(0.01)) is not None:
            kind = item.WhichOneof("update")
            got.append(f"{kind}:{item.position.position.lat}" if kind == "position" else kind)
        return got

    return asyncio.run(run())


def _status(status: common_pb2.OrderStatus) -> tracking_service_pb2.TrackResponse:
    return tracking_service_pb2.TrackResponse(status=tracking_pb2.StatusEntry(status=status))


def test_a_newer_position_or_eta_replaces_the_queued_one_and_status_changes_stay() -> None:
    inbox = Inbox(8)
    eta = tracking_service_pb2.TrackResponse()
    eta.eta.SetInParent()
    inbox.put(_status(common_pb2.ORDER_STATUS_PICKED_UP))
    inbox.put(_position(1.0))
    inbox.put(eta)
    inbox.put(_position(2.0))
    inbox.put(_status(common_pb2.ORDER_STATUS_NEARBY))
    inbox.put(_position(3.0))
    inbox.put(eta)

    # A stream that fell behind sends the newest position and ETA, after every status.
    assert _drain(inbox) == ["status", "status", "position:3.0", "eta"]


def test_a_full_inbox_drops_the_oldest_update_and_keeps_status_changes() -> None:
    inbox = Inbox(3)
    inbox.put(_status(common_pb2.ORDER_STATUS_PICKED_UP))
    inbox.put(_position(1.0))
    inbox.put(_status(common_pb2.ORDER_STATUS_NEARBY))
    inbox.put(_status(common_pb2.ORDER_STATUS_DELIVERED))

    assert _drain(inbox) == ["status", "status", "status"]
