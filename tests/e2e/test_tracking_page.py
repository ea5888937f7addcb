"""The customer tracking page in headless Chromium against the real stack: a driver drives
through the gateway while the page (phone viewport) shows the marker, ETA, timeline, and
sends an instruction edit that reaches the driver's Connect stream."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2

from core.geo import LatLng, haversine_m
from core.roads import RoadNetwork
from tests.e2e.browser import Browser
from tests.e2e.conftest import WebEdge
from tests.integration.customer_support import (
    create_driver_and_order,
    dispatch_sets_status,
)
from tests.integration.ingest_support import DriverApp, batch, fix, now_s, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
VALLETTA = LatLng(35.8960, 14.5110)
SLIEMA = LatLng(35.9126, 14.5045)
S = common_pb2.OrderStatus
MARKER = "document.getElementById('driver-marker')"
ETA = "document.getElementById('eta').dataset.eta"


def _drive_points(roads: RoadNetwork) -> list[LatLng]:
    geometry = roads.route([VALLETTA, SLIEMA]).geometry
    points = [geometry[0]]
    for point in geometry[1:]:  # about 40 m apart: an ETA refresh every few batches
        if haversine_m(points[-1], point) >= 40:
            points.append(point)
    return points


def _marker(page: Browser) -> LatLng:
    lat, lng = page.eval(f"[Number({MARKER}.dataset.lat), Number({MARKER}.dataset.lng)]")
    return LatLng(lat, lng)


def _instruction_change(app: DriverApp, text: str) -> driver_pb2.InstructionChange:
    """The first InstructionChange command carrying ``text`` (acks and others skipped)."""
    while True:
        response = app.recv(timeout=15)
        change = response.instruction_change
        if (
            response.WhichOneof("command") == "instruction_change"
            and change.instructions.text == text
        ):
            return change


def test_tracking_page_follows_the_driver(
    web_edge: WebEdge, roads: RoadNetwork, phone: Browser, screenshots: Path
) -> None:
    settings = web_edge.settings
    dsn = settings.database_url
    points = _drive_points(roads)
    drop_at = len(points) - 4
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    order_id, tracking_token = create_driver_and_order(
        settings, web_edge.platform.addresses["dispatch"], driver, points[6], points[drop_at]
    )
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), driver)
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_TO_PICKUP"))
    app = DriverApp(web_edge.platform.addresses["gateway"], token(settings, driver))
    try:
        app.hello()
        start = int(now_s()) - 3 * len(points)
        fixes = [fix(p, start + 3 * i) for i, p in enumerate(points)]
        assert app.send_and_wait(batch(1, fixes[:2])).WhichOneof("command") == "ack"

        phone.goto(f"{web_edge.url}/track/#token={tracking_token}")
        phone.wait("document.body.dataset.live === 'stream'")
        phone.wait(f"{MARKER} && {MARKER}.dataset.lat")
        assert phone.eval("document.getElementById('instructions-text').value") == "ring twice"
        first_position = _marker(phone)
        assert haversine_m(first_position, points[1]) < 60

        # The customer edits the instructions; the driver's stream is told at once.
        new_text = "Blue door, gate code 4711"
        phone.fill("#instructions-text", new_text)
        phone.click("#instructions-save")
        phone.wait("document.getElementById('instructions-result').textContent.includes('Saved')")
        change = _instruction_change(app, new_text)
        assert change.order_id == order_id

        # The driver drives: the marker glides along and the ETA changes.
        seq = 2
        for index in range(2, 18, 2):
            ack = app.send_and_wait(batch(seq, fixes[index : index + 2]))
            assert ack.WhichOneof("command") == "ack"
            seq += 1
        first_eta = phone.wait(ETA)
        for index in range(18, 34, 2):
            assert app.send_and_wait(batch(seq, fixes[index : index + 2])).WhichOneof("command")
            seq += 1
        phone.wait(f"{ETA} && {ETA} !== {json.dumps(first_eta)}")
        target = points[33]
        phone.wait(
            f"Math.abs(Number({MARKER}.dataset.lat) - {target.lat}) < 0.0005 && "
            f"Math.abs(Number({MARKER}.dataset.lng) - {target.lng}) < 0.0005"
        )
        assert haversine_m(_marker(phone), first_position) > 300
        assert phone.eval("document.getElementById('eta').textContent").startswith("in ")
        phone.screenshot(screenshots / "tracking-driving.png", full_page=True)

        # A status change appears in the timeline, and changes are closed after pickup.
        dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_AT_PICKUP"))
        dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_PICKED_UP"))
        phone.wait("document.querySelector('#timeline li[data-status=ORDER_STATUS_PICKED_UP]')")
        assert phone.eval("document.getElementById('status-line').textContent") == "Picked up"
        assert phone.eval("document.getElementById('instructions-fields').disabled") is True
        phone.screenshot(screenshots / "tracking-picked-up.png", full_page=True)
        assert phone.console_errors() == []
    finally:
        app.close()
