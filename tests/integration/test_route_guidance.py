"""Driver guidance end to end on the whole platform: route versions pushed down the real
Connect stream, acknowledged and shown by GetRoute, handed again on reconnect while
unacknowledged; and off-route detection: a driver that follows its route is left alone, one
that leaves it gets exactly one recomputed version starting where it is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dps
from lastmile.dispatch.v1 import order_service_pb2 as ops
from lastmile.driver.v1 import driver_pb2

from core import route_plans, topics
from core.geo import LatLng, distance_to_polyline_m, haversine_m
from core.roads import RoadNetwork
from tests.helpers import wait_until
from tests.integration.conftest import Platform
from tests.integration.guidance_support import (
    SLIEMA,
    ST_JULIANS,
    GuidedApp,
    Staff,
    first_leg_start,
    leg_points,
    polled,
    stops_of,
)
from tracking.off_route import state_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PAOLA = LatLng(35.8730, 14.5070)  # south of the harbour, away from Valletta -> Sliema roads


@pytest.fixture
def staff(platform: Platform) -> Iterator[Staff]:
    client = Staff(platform.settings, platform.addresses["dispatch"])
    yield client
    client.close()


@pytest.fixture
def r(platform: Platform) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(platform.settings.redis_url)
    yield client
    client.close()


def app_of(platform: Platform, driver_id: str) -> GuidedApp:
    app = GuidedApp(platform.settings, platform.addresses["gateway"], driver_id)
    app.connect()
    return app


def plan(staff: Staff, driver_id: str, order_ids: list[str]) -> None:
    """PlanWave of these orders onto the driver, the wave started an hour ago."""
    request = dps.PlanWaveRequest(
        driver_ids=[driver_id], order_ids=order_ids, time_limit=Duration(seconds=1)
    )
    request.start.FromSeconds(int(time.time()) - 3600)
    response = staff.admin.PlanWave(request, metadata=staff.md)
    assert list(response.unassigned_order_ids) == []


def acked(staff: Staff, driver_id: str, version: int) -> Any:
    return wait_until(
        polled(lambda: staff.route(driver_id), lambda r: r.acked_version == version),
        15,
        what=f"GetRoute acked_version {version}",
    )


def assert_complete(route: route_pb2.Route) -> None:
    """Legs with geometry and steps to every remaining stop; stops with their content."""
    assert len(route.legs) == len(route.stops)
    assert any(step.maneuver_type == "depart" for leg in route.legs for step in leg.steps)
    assert all(len(leg.geometry) >= 2 for leg in route.legs if leg.distance_m > 0)
    for stop in route.stops:
        assert stop.instructions.contact_free and stop.instructions.text
        if stop.kind == route_pb2.STOP_KIND_DROP_OFF:
            assert stop.access_notes == "blue door, 2nd floor"


def test_versions_are_pushed_acknowledged_and_handed_again_on_reconnect(
    platform: Platform, staff: Staff
) -> None:
    driver, other = staff.driver("guided"), staff.driver("other")
    orders = [staff.order(p, "ring twice", "blue door, 2nd floor") for p in (SLIEMA, ST_JULIANS)]
    app, other_app = app_of(platform, driver), app_of(platform, other)
    try:
        plan(staff, driver, orders)
        first = app.next_command("route_update")
        assert (first.reason, first.route.version) == ("planned", 1)
        assert {s.order_id for s in first.route.stops} == set(orders)
        assert_complete(first.route)
        app.ack_route(first.route)
        shown = acked(staff, driver, 1)
        assert shown.version == 1 and shown.HasField("acked_at")

        # An instruction change: the InstructionChange, and version 2 with the new text.
        change = ops.UpdateInstructionsRequest(order_id=orders[0])
        change.instructions.text, change.instructions.contact_free = "leave at reception", True
        staff.orders.UpdateInstructions(change, metadata=staff.md)
        assert app.next_command("instruction_change").order_id == orders[0]
        second = app.next_command("route_update")
        assert (second.reason, second.route.version) == ("instructions", 2)
        texts = {s.instructions.text for s in stops_of(second.route, orders[0])}
        assert texts == {"leave at reception"}
        assert [s.stop_id for s in second.route.stops] == [s.stop_id for s in first.route.stops]

        # Reassignment: the losing driver gets version 3 without the order, the gaining one a
        # route of its own with the order's pickup and drop-off.
        assign = dps.AssignOrderRequest(order_id=orders[1], driver_id=other, reason="test")
        staff.admin.AssignOrder(assign, metadata=staff.md)
        third = app.next_command("route_update")
        assert (third.reason, third.route.version) == ("reassigned", 3)
        assert {s.order_id for s in third.route.stops} == {orders[0]}
        assert_complete(third.route)
        gained = other_app.next_command("route_update")
        assert (gained.reason, gained.route.version) == ("reassigned", 1)
        kinds = [s.kind for s in stops_of(gained.route, orders[1])]
        assert kinds == [route_pb2.STOP_KIND_PICKUP, route_pb2.STOP_KIND_DROP_OFF]
        assert_complete(gained.route)
        assert staff.route(driver).acked_version == 1

        # Versions 2 and 3 were not acknowledged: a reconnecting app gets version 3 in Welcome.
        app.close()
        app = GuidedApp(platform.settings, platform.addresses["gateway"], driver)
        welcome = app.connect()
        assert (welcome.route.route_id, welcome.route.version) == (third.route.route_id, 3)
        # An ack of a version the route never had is ignored (had it counted, the acknowledged
        # version could not come down to 3 afterwards); another driver's route is refused.
        app.event(route_ack=driver_pb2.RouteAck(route_id=third.route.route_id, version=99))
        refused = app.answer(
            route_ack=driver_pb2.RouteAck(route_id=gained.route.route_id, version=1)
        )
        assert refused.WhichOneof("command") == "reject" and refused.reject.code == 7
        app.ack_route(welcome.route)
        acked(staff, driver, 3)
        assert staff.route(other).acked_version == 0
        app.close()
        app = GuidedApp(platform.settings, platform.addresses["gateway"], driver)
        assert not app.connect().HasField("route")
    finally:
        app.close()
        other_app.close()


def off_route_state(r: redis.Redis, driver_id: str) -> dict[str, str]:
    raw: Any = r.hgetall(state_key(driver_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def evaluated(r: redis.Redis, driver_id: str, version: int, at_s: float) -> dict[str, str]:
    """Tracking's state once it has stepped the driver's fix at ``at_s`` against ``version``."""
    return wait_until(
        polled(
            lambda: off_route_state(r, driver_id),
            lambda s: (
                s.get("version") == str(version) and s.get("seen_ms") == str(round(at_s * 1000))
            ),
        ),
        # Generous: the shared platform's processor may still be working through earlier
        # modules' pings when this module runs late in a busy suite.
        60,
        what=f"off-route state of version {version} at {at_s}",
    )


def off_route_events(r: redis.Redis, driver_id: str) -> list[Any]:
    entries: Any = r.xrange(topics.OFF_ROUTE_EVENTS)
    return [e for _, e in entries if e[b"driver"].decode() == driver_id]


def test_following_is_left_alone_and_leaving_gets_one_recomputed_version(
    platform: Platform, staff: Staff, r: redis.Redis, roads: RoadNetwork
) -> None:
    driver = staff.driver("wanderer")
    order_id = staff.order(SLIEMA, "ring twice", "blue door, 2nd floor")
    app = app_of(platform, driver)
    try:
        plan(staff, driver, [order_id])
        route = app.next_command("route_update").route
        app.ack_route(route)
        points = leg_points(route)
        assert len(points) > 10

        # Following the route: fixes along its legs, two seconds apart, in batches of five.
        start = time.time() - 2 * len(points) - 120
        timed = [(p, start + 2 * k) for k, p in enumerate(points)]
        for k in range(0, len(timed), 5):
            app.fixes(timed[k : k + 5])
        last = timed[-1][1]
        state = evaluated(r, driver, route.version, last)
        assert state["fired"] == "0" and state["off_since_ms"] == "0"
        assert app.updates()[1:] == [] and off_route_events(r, driver) == []

        # Leaving it: a point on another road, for longer than off_route_after_s.
        away = roads.nearest(PAOLA).location
        assert distance_to_polyline_m(away, points) > 500
        after = platform.settings.off_route_after_s
        app.fixes([(away, last + 10 + s) for s in range(0, 10, 5)])
        app.fixes([(away, last + 10 + s) for s in range(10, int(after) + 15, 5)])
        update = app.next_command("route_update", timeout=30)
        assert (update.reason, update.route.version) == ("off_route", route.version + 1)
        assert [s.stop_id for s in update.route.stops] == [s.stop_id for s in route.stops]
        assert haversine_m(first_leg_start(update.route), away) < 30
        assert_complete(update.route)

        # Staying there, now on the new geometry's start: no second recomputation.
        tail = last + 10 + after + 20
        app.fixes([(away, tail + s) for s in range(0, int(after) + 10, 5)])
        state = evaluated(r, driver, update.route.version, tail + int(after) + 5)
        assert state["fired"] == "0" and state["off_since_ms"] == "0"
        assert len(off_route_events(r, driver)) == 1
        assert [u.reason for u in app.updates()] == ["planned", "off_route"]
        assert staff.route(driver).version == route.version + 1
        mirrored: Any = r.hget(route_plans.plan_key(driver), route_plans.FIELD_VERSION)
        assert int(mirrored) == route.version + 1
    finally:
        app.close()


def test_order_cancel_takes_its_stops_off_the_route(platform: Platform, staff: Staff) -> None:
    driver = staff.driver("cancel")
    orders = [staff.order(p, "ring twice", "blue door, 2nd floor") for p in (SLIEMA, ST_JULIANS)]
    app = app_of(platform, driver)
    try:
        plan(staff, driver, orders)
        first = app.next_command("route_update").route
        cancel = ops.CancelOrderRequest(order_id=orders[0], reason="customer")
        staff.orders.CancelOrder(cancel, metadata=staff.md)
        assert app.next_command("order_cancelled").order_id == orders[0]
        update = app.next_command("route_update")
        assert (update.reason, update.route.version) == ("cancelled", first.version + 1)
        assert {s.order_id for s in update.route.stops} == {orders[1]}
        assert_complete(update.route)
        assert staff.route(driver).version == first.version + 1
        got = staff.orders.GetOrder(ops.GetOrderRequest(order_id=orders[0]), metadata=staff.md)
        assert got.order.status == common_pb2.ORDER_STATUS_CANCELLED
    finally:
        app.close()
