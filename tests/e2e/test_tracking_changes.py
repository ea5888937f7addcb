"""The customer tracking page's changes and fallbacks in headless Chromium against the real
stack: rescheduling from the page (while allowed), the proof photo once delivered, and polling
with a notice when the live stream breaks."""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from pathlib import Path

import pytest
from lastmile.common.v1 import common_pb2

from core.geo import LatLng
from tests.e2e.browser import Browser
from tests.e2e.conftest import WebEdge
from tests.e2e.support import broken_stream_edge, deliver_with_photo, get_order
from tests.integration.customer_support import (
    create_driver_and_order,
    dispatch_sets_status,
    sql,
)
from tests.integration.ingest_support import now_s
from tests.integration.pod_support import http_get

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
# In Gzira and Msida, away from the other tests' drivers.
PICKUP = LatLng(35.9050, 14.4920)
DOOR = LatLng(35.9010, 14.4880)
S = common_pb2.OrderStatus
PHOTO = "document.getElementById('proof-photo')"
WINDOW_OPTION = 4  # the second day's afternoon window
POLL_S = 1
BROKEN_STREAM_ERROR = (
    "Failed to load resource: the server responded with a status of 503 (Service Unavailable)"
)


def _order(web_edge: WebEdge) -> tuple[str, str, str]:
    """A new instant order and its driver: (order id, tracking token, driver id)."""
    driver = f"e2e-{uuid.uuid4().hex[:8]}"
    order_id, tracking_token = create_driver_and_order(
        web_edge.settings, web_edge.platform.addresses["dispatch"], driver, PICKUP, DOOR
    )
    return order_id, tracking_token, driver


def _picked_up(dsn: str, order_id: str, driver: str) -> None:
    """Dispatch's status changes up to the driver carrying the parcel."""
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), driver)
    for status in ("TO_PICKUP", "AT_PICKUP", "PICKED_UP"):
        dispatch_sets_status(dsn, order_id, S.Value(f"ORDER_STATUS_{status}"))


def _iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_reschedule_from_the_page_then_the_proof_photo(
    web_edge: WebEdge, phone: Browser, screenshots: Path
) -> None:
    dsn = web_edge.settings.database_url
    order_id, tracking_token, driver = _order(web_edge)
    phone.goto(f"{web_edge.url}/track/#token={tracking_token}")
    phone.wait("document.body.dataset.live === 'stream'")

    # Rescheduling is offered while the order waits: pick a window and send it.
    phone.wait("!document.getElementById('reschedule-fields').disabled")
    choice = phone.eval(
        f"(() => {{ const s = document.getElementById('reschedule-window');"
        f" s.selectedIndex = {WINDOW_OPTION}; return s.value; }})()"
    )
    start, end = (_iso(part) for part in str(choice).split("|"))
    phone.click("#reschedule-save")
    result = "document.getElementById('reschedule-result')"
    phone.wait(f"{result}.textContent.startsWith('Rescheduled —')")
    assert phone.eval(f"{result}.classList.contains('ok')") is True
    window = get_order(web_edge, order_id).drop_off_window
    assert (window.start.ToDatetime(dt.UTC), window.end.ToDatetime(dt.UTC)) == (start, end)
    row = sql(dsn, "SELECT drop_off_start, status FROM orders WHERE order_id = $1", order_id)[0]
    assert row["drop_off_start"] == start
    assert row["status"] == S.Value("ORDER_STATUS_RESCHEDULED")
    shown_start = phone.wait("document.getElementById('delivery-window').dataset.start")
    assert _iso(str(shown_start)) == start
    assert phone.eval("document.getElementById('delivery-window').textContent").startswith(
        "Delivery window: "
    )
    phone.wait("document.querySelector('#timeline li[data-status=ORDER_STATUS_RESCHEDULED]')")
    phone.screenshot(screenshots / "tracking-rescheduled.png", full_page=True)

    # Later the driver delivers with a photo: the page shows it from its pre-signed URL.
    _picked_up(dsn, order_id, driver)
    phone.wait("document.getElementById('instructions-fields').disabled")
    photo = deliver_with_photo(web_edge, order_id, driver, DOOR, now_s())
    phone.wait("document.getElementById('status-line').textContent === 'Delivered'")
    phone.wait(f"{PHOTO}.complete && {PHOTO}.naturalWidth > 0")
    assert phone.eval("document.getElementById('proof').hidden") is False
    src = str(phone.eval(f"{PHOTO}.src"))
    assert f"proofs/{order_id}/" in src and "Signature=" in src, src
    assert http_get(src) == (200, photo)
    phone.screenshot(screenshots / "tracking-proof.png", full_page=True)
    assert phone.console_errors() == []


def test_page_polls_and_says_so_when_the_stream_breaks(
    web_edge: WebEdge, phone: Browser, screenshots: Path
) -> None:
    dsn = web_edge.settings.database_url
    order_id, tracking_token, driver = _order(web_edge)
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), driver)
    edge, url = broken_stream_edge(web_edge, Path(tempfile.mkdtemp(prefix="lastmile-e2e-")))
    try:
        # The default interval, as customers see it.
        phone.goto(f"{url}/track/#token={tracking_token}")
        phone.wait("document.body.dataset.live === 'polling'")
        notice = "document.getElementById('notice')"
        assert phone.eval(f"{notice}.hidden") is False
        assert phone.eval(f"{notice}.textContent") == "Live updates paused — refreshing every 30 s."

        # A short interval from the fragment (a new page: a fragment change alone is no
        # reload): the polls keep the page current.
        phone.goto("about:blank")
        phone.goto(f"{url}/track/#token={tracking_token}&poll={POLL_S}")
        phone.wait("document.body.dataset.live === 'polling'")
        assert phone.eval(f"{notice}.textContent") == (
            f"Live updates paused — refreshing every {POLL_S} s."
        )
        phone.wait("document.getElementById('status-line').textContent === 'Driver assigned'")
        for status in ("TO_PICKUP", "AT_PICKUP", "PICKED_UP"):
            dispatch_sets_status(dsn, order_id, S.Value(f"ORDER_STATUS_{status}"))
        phone.wait("document.querySelector('#timeline li[data-status=ORDER_STATUS_PICKED_UP]')")
        assert phone.eval("document.getElementById('status-line').textContent") == "Picked up"
        assert phone.eval("document.body.dataset.live") == "polling"
        assert phone.eval(f"{notice}.hidden") is False
        phone.screenshot(screenshots / "tracking-polling.png", full_page=True)
        # Chromium logs each refused Track call (the break made here); nothing else.
        errors = phone.console_errors()
        assert errors and set(errors) == {BROKEN_STREAM_ERROR}, errors
    finally:
        edge.stop()
