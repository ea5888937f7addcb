"""The dispatcher dashboard in headless Chromium against the real stack (desktop viewport):
the live fleet on the map, a driver's details, and a polygon drawn on the map that finds
exactly the drivers inside it; the header's share of the day's ETAs that were on time."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from pathlib import Path

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc

from core.auth import Role
from core.geo import LatLng
from core.roads import RoadNetwork
from tests.e2e.browser import Browser
from tests.e2e.conftest import WebEdge
from tests.e2e.support import online_driver
from tests.integration.customer_support import (
    create_driver_and_order,
    record_arrival,
    record_prediction,
    sql,
    staff_metadata,
)
from tests.integration.ingest_support import DriverApp, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
# Around Mdina and Rabat, away from the Valletta drivers of other tests.
AREA = [LatLng(35.8900, 14.3950), LatLng(35.8900, 14.4100), LatLng(35.8800, 14.4100)]
AREA.append(LatLng(35.8800, 14.3950))
INSIDE = [LatLng(35.8860, 14.4010), LatLng(35.8835, 14.4060)]
OUTSIDE = [LatLng(35.8740, 14.4000)]
VIEW = "[[35.872, 14.390], [35.893, 14.414]]"


def _page_point(page: Browser, at: LatLng) -> tuple[float, float]:
    x, y = page.eval(
        "(() => { const r = document.getElementById('map').getBoundingClientRect();"
        f" const p = window.dashboardMap.latLngToContainerPoint([{at.lat}, {at.lng}]);"
        " return [r.left + p.x, r.top + p.y]; })()"
    )
    return float(x), float(y)


def test_dashboard_shows_the_fleet_and_searches_an_area(
    web_edge: WebEdge, roads: RoadNetwork, desktop: Browser, screenshots: Path
) -> None:
    on_road = [roads.nearest(p).location for p in INSIDE + OUTSIDE]
    apps: list[DriverApp] = []
    drivers: list[str] = []
    try:
        for where in on_road:
            driver, app = online_driver(web_edge, where)
            drivers.append(driver)
            apps.append(app)
        inside, outside = set(drivers[: len(INSIDE)]), set(drivers[len(INSIDE) :])
        # An order of the tenant, to be reassigned from the order list (registers drivers[1]).
        order_id, _ = create_driver_and_order(
            web_edge.settings,
            web_edge.platform.addresses["dispatch"],
            drivers[1],
            on_road[0],
            on_road[2],
        )
        dispatcher = token(web_edge.settings, "dispatcher-e2e", Role.DISPATCHER)
        desktop.goto(f"{web_edge.url}/dashboard/#token={dispatcher}")

        # The fleet: one coloured marker per driver, counts filled in.
        marker = "document.querySelector('.driver-dot[data-driver-id=\"{}\"]')"
        for driver in drivers:
            desktop.wait(marker.format(driver))
        desktop.wait("document.getElementById('connection').textContent === 'Live'")
        assert int(desktop.eval("document.getElementById('count-idle').textContent")) >= 0
        desktop.wait("/^\\d+$/.test(document.getElementById('count-active').textContent)")
        desktop.eval(f"void window.dashboardMap.fitBounds({VIEW}, {{animate: false}})")

        # A click on a driver shows its details.
        x, y = _page_point(desktop, on_road[0])
        desktop.mouse(x, y)
        desktop.wait(
            f"document.getElementById('driver-title').textContent.includes('{drivers[0]}')"
        )
        desktop.wait("document.getElementById('driver-route').textContent.startsWith('Route:')")

        # Draw the area: click the corners, double-click the last one.
        desktop.click("#draw")
        for corner in AREA[:-1]:
            desktop.mouse(*_page_point(desktop, corner))
        desktop.mouse(*_page_point(desktop, AREA[-1]), double=True)
        desktop.wait("document.querySelector('#search-results li:not(.muted):not(:empty)')")
        found = set(
            desktop.eval(
                "[...document.querySelectorAll('#search-results li[data-driver-id]')]"
                ".map(li => li.dataset.driverId)"
            )
        )
        assert inside <= found, (inside, found)
        assert not outside & found, (outside, found)
        for driver in inside:
            assert desktop.eval(f"{marker.format(driver)}.dataset.highlighted") == "true"
        desktop.screenshot(screenshots / "dashboard-search.png")

        # Reassign the order from the list to drivers[1].
        row = f"#orders li[data-order-id='{order_id}']"
        desktop.wait(f'document.querySelector("{row}")')
        desktop.click(row)
        desktop.eval(f"void (document.getElementById('assign-driver').value = '{drivers[1]}')")
        desktop.click("#assign button[type=submit]")
        desktop.wait("document.querySelector('#assign-result.ok')")
        query = "SELECT driver_id FROM orders WHERE order_id = $1"
        assert sql(web_edge.settings.database_url, query, order_id)[0]["driver_id"] == drivers[1]
        assert desktop.console_errors() == []
    finally:
        for app in apps:
            app.close()


def _days_eta_accuracy(web_edge: WebEdge) -> fleet_service_pb2.EtaAccuracy:
    """What FleetService.GetEtaAccuracy says of the test tenant's last 24 hours."""
    now = dt.datetime.now(dt.UTC)
    request = fleet_service_pb2.GetEtaAccuracyRequest()
    request.start.FromDatetime(now - dt.timedelta(days=1))
    request.end.FromDatetime(now)
    with grpc.insecure_channel(web_edge.platform.addresses["tracking"]) as channel:
        report = fleet_service_pb2_grpc.FleetServiceStub(channel).GetEtaAccuracy(
            request, metadata=staff_metadata(web_edge.settings), timeout=30
        )
    return report.overall


def test_dashboard_shows_the_days_eta_accuracy(
    web_edge: WebEdge, roads: RoadNetwork, desktop: Browser
) -> None:
    # A delivery an hour ago whose customer was shown two ETAs: 30 s and 5 min early.
    driver = f"drv-eta-{uuid.uuid4().hex[:8]}"
    order_id, _ = create_driver_and_order(
        web_edge.settings,
        web_edge.platform.addresses["dispatch"],
        driver,
        roads.nearest(INSIDE[0]).location,
        roads.nearest(OUTSIDE[0]).location,
    )
    delivered = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    dsn = web_edge.settings.database_url
    record_arrival(dsn, order_id, common_pb2.ORDER_STATUS_DELIVERED, delivered)
    for before_s, early_s in ((600, 30), (1200, 300)):
        record_prediction(dsn, order_id, driver, delivered, before_s, early_s)
    dispatcher = token(web_edge.settings, "dispatcher-e2e", Role.DISPATCHER)

    desktop.goto(f"{web_edge.url}/dashboard/#token={dispatcher}")
    shown = desktop.wait(
        "(() => { const dd = document.getElementById('eta-accuracy');"
        " return dd.dataset.predictions && dd.dataset.predictions !== '0'"
        " && [dd.textContent, dd.dataset.predictions, dd.title]; })()"
    )

    expected = _days_eta_accuracy(web_edge)
    text, predictions, title = shown
    assert int(predictions) == expected.predictions >= 2
    assert text == f"{math.floor(expected.within_tolerance_ratio * 100 + 0.5)} %"
    assert f"{expected.predictions} ETAs for {expected.deliveries} deliveries" in title
    assert desktop.console_errors() == []
