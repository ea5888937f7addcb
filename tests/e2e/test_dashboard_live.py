"""The dispatcher dashboard's driver view and live feed in headless Chromium against the real
stack: a wave planned for a driver is drawn (orders, route line, stops, km, next stop) when the
driver is clicked, and a geofence entry and a failed delivery appear in the live feed; a
driver's status change shows on the map at once, without a new position, and the driver view
says since when."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2

from core.auth import Role
from core.geo import LatLng
from core.roads import RoadNetwork
from tests.e2e.browser import Browser
from tests.e2e.conftest import WebEdge
from tests.e2e.support import (
    create_fence,
    online_driver,
    plan_route,
    planned_order,
    register_depot_driver,
    report_failed_attempt,
    shown,
)
from tests.integration.customer_support import create_driver_and_order, dispatch_sets_status
from tests.integration.ingest_support import DriverApp, Request, batch, fix, now_s, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
# Around Marsa and Paola, away from the other tests' drivers.
DEPOT = LatLng(35.8790, 14.4950)
DROP_OFFS = [LatLng(35.8760, 14.5050), LatLng(35.8700, 14.4960)]
FENCE = LatLng(35.8765, 14.4990)  # ~400 m from the depot
FENCE_RADIUS_M = 80.0
MDINA = LatLng(35.8860, 14.4030)  # the status test's driver, alone there
S = common_pb2.OrderStatus
# The feed streams open with the page and start at "now": an event that raced their opening
# is not replayed, so the action is repeated (each repetition is a new, real event).
FEED_TRIES = 3
FEED_WAIT_S = 5.0
ROUTE_TEXT = re.compile(r"^Route: (\d+) stops, (\d+\.\d) km; next stop around \d\d:\d\d")


def _failed_order(web_edge: WebEdge, pickup: LatLng, drop_off: LatLng) -> str:
    """An order picked up by another driver, ready for a failed attempt."""
    carrier = f"e2e-{uuid.uuid4().hex[:8]}"
    order_id, _ = create_driver_and_order(
        web_edge.settings, web_edge.platform.addresses["dispatch"], carrier, pickup, drop_off
    )
    dsn = web_edge.settings.database_url
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), carrier)
    for status in ("TO_PICKUP", "AT_PICKUP", "PICKED_UP"):
        dispatch_sets_status(dsn, order_id, S.Value(f"ORDER_STATUS_{status}"))
    return order_id


def _shows_route(page: Browser, driver: str, order_ids: list[str], route_id: str) -> str:
    """Click the driver's dot; wait for its orders and route; the route text."""
    page.eval(
        f"void window.dashboardMap.setView([{DEPOT.lat}, {DEPOT.lng}], 15, {{animate: false}})"
    )
    page.click(f'.driver-dot[data-driver-id="{driver}"]')
    page.wait(f"document.getElementById('driver-title').textContent.includes('{driver}')")
    for order_id in order_ids:
        page.wait(f"document.querySelector('#driver-orders li[data-order-id=\"{order_id}\"]')")
    page.wait(f"document.getElementById('driver-route').dataset.routeId === '{route_id}'")
    return str(page.eval("document.getElementById('driver-route').textContent"))


def _feed_has(page: Browser, kind: str, *words: str) -> str:
    checks = " && ".join(f"li.textContent.includes('{w}')" for w in words)
    return f"[...document.querySelectorAll('#feed li.{kind}')].some(li => {checks})"


def test_dashboard_shows_a_drivers_route_and_the_live_feed(
    web_edge: WebEdge, roads: RoadNetwork, desktop: Browser, screenshots: Path
) -> None:
    depot = roads.nearest(DEPOT).location
    drops = [roads.nearest(p).location for p in DROP_OFFS]
    fence_center = roads.nearest(FENCE).location
    driver, app = online_driver(web_edge, depot)
    apps: list[DriverApp] = [app]
    try:
        register_depot_driver(web_edge, driver, depot)
        order_ids = [planned_order(web_edge, depot, drop) for drop in drops]
        route = plan_route(web_edge, driver, order_ids)
        fence_id = create_fence(web_edge, fence_center, FENCE_RADIUS_M, driver)
        failed_id = _failed_order(web_edge, depot, drops[0])
        dispatcher = token(web_edge.settings, "dispatcher-e2e", Role.DISPATCHER)
        desktop.goto(f"{web_edge.url}/dashboard/#token={dispatcher}")
        desktop.wait(f"document.querySelector('.driver-dot[data-driver-id=\"{driver}\"]')")
        desktop.wait("document.getElementById('connection').textContent === 'Live'")

        # A click on the driver: their orders, the route line (one path per leg) and the text.
        text = _shows_route(desktop, driver, order_ids, route.route_id)
        match = ROUTE_TEXT.match(text)
        assert match, text
        assert int(match.group(1)) == len(route.stops) == 2 * len(order_ids)
        assert match.group(2) == f"{route.distance_m / 1000:.1f}"
        legs = desktop.eval("document.querySelectorAll('#map path.route-leg').length")
        assert legs == len(route.legs) > 0
        drawn = desktop.eval(
            "[...document.querySelectorAll('#map path.route-leg')]"
            ".filter(p => p.getTotalLength() > 0).length"
        )
        assert drawn == sum(1 for leg in route.legs if leg.distance_m > 0) > 0
        desktop.screenshot(screenshots / "dashboard-route.png")

        # The driver drives into the fence (out again between tries): the feed says so.
        seq, at = 2, int(now_s())
        fence_shown = False
        for _ in range(FEED_TRIES):
            for where in (fence_center, depot):  # in, and out again for the next try
                at = max(at + 2, int(now_s()))  # fixes older than the last one are dropped
                moves = [fix(where, at, speed=5.0), fix(where, at + 1, speed=0.0)]
                assert app.send_and_wait(batch(seq, moves)).WhichOneof("command") == "ack"
                seq += 1
                expression = _feed_has(desktop, "geofence", driver, "entered", fence_id[:8])
                if fence_shown := shown(desktop, expression, FEED_WAIT_S):
                    break
            if fence_shown:
                break
        assert fence_shown, desktop.eval("document.getElementById('feed').textContent")

        # A failed delivery (NOT_HOME: reattempted, so it can fail again on a retry).
        failed_shown = False
        for _ in range(FEED_TRIES):
            report_failed_attempt(web_edge, failed_id, common_pb2.FAILURE_REASON_NOT_HOME)
            expression = _feed_has(desktop, "failed", failed_id[:8], "nobody at home")
            if failed_shown := shown(desktop, expression, FEED_WAIT_S):
                break
        assert failed_shown, desktop.eval("document.getElementById('feed').textContent")
        desktop.screenshot(screenshots / "dashboard-feed.png")
        assert desktop.console_errors() == []
    finally:
        for each in apps:
            each.close()


def test_a_status_change_shows_at_once_and_since_when(
    web_edge: WebEdge, roads: RoadNetwork, desktop: Browser
) -> None:
    spot = roads.nearest(MDINA).location
    driver, app = online_driver(web_edge, spot)
    dot = f"document.querySelector('.driver-dot[data-driver-id=\"{driver}\"]')"
    try:
        dispatcher = token(web_edge.settings, "dispatcher-e2e", Role.DISPATCHER)
        desktop.goto(f"{web_edge.url}/dashboard/#token={dispatcher}")
        desktop.wait(f"{dot}?.getAttribute('data-status') === 'IDLE'")
        desktop.wait("document.getElementById('connection').textContent === 'Live'")

        change = driver_pb2.StatusChange(status=common_pb2.DRIVER_STATUS_ON_BREAK)
        change.at.FromSeconds(int(now_s()))
        assert app.send_and_wait(Request(seq=2, status=change)).WhichOneof("command") == "ack"

        # No position follows: the change itself reaches the map.
        desktop.wait(f"{dot}.getAttribute('data-status') === 'ON_BREAK'", timeout_s=10)
        # Close in, so that no other test's driver lies over this one's dot.
        desktop.eval(
            f"void window.dashboardMap.setView([{spot.lat}, {spot.lng}], 17, {{animate: false}})"
        )
        desktop.click(f'.driver-dot[data-driver-id="{driver}"]')
        desktop.wait(f"document.getElementById('driver-title').textContent.includes('{driver}')")
        desktop.wait("document.getElementById('driver-state').textContent.startsWith('on break')")
        state = str(desktop.eval("document.getElementById('driver-state').textContent"))
        assert re.fullmatch(r"on break since \S+( [AP]M)?, seen \S+( [AP]M)?", state), state
    finally:
        app.close()
