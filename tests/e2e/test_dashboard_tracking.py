"""The dashboard's "Tracking" panel in headless Chromium against the real stack: a dispatcher
changes the tenant's tracking intervals and a connected driver app gets them at once; an
interval the apps cannot follow is refused with the server's message and changes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from lastmile.driver.v1 import driver_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc

from core.auth import Role
from tests.e2e.browser import Browser
from tests.e2e.conftest import WebEdge
from tests.integration.ingest_support import DriverApp, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PANEL = "#tracking"
RESULT = "document.getElementById('tracking-result').textContent"


def _value(field: str) -> str:
    return f"document.getElementById('tracking-{field}').value"


def _pair(config: driver_pb2.TrackingConfig) -> tuple[float, float]:
    return (
        config.capture_interval.ToMilliseconds() / 1000,
        config.upload_interval.ToMilliseconds() / 1000,
    )


def test_dispatcher_changes_the_tracking_intervals_from_the_dashboard(
    web_edge: WebEdge, desktop: Browser, screenshots: Path
) -> None:
    # A tenant of its own: the other tests' drivers keep the defaults.
    settings, tenant = web_edge.settings, f"tenant-e2e-{uuid.uuid4().hex[:8]}"
    driver = f"drv-intervals-{uuid.uuid4().hex[:8]}"
    app = DriverApp(
        web_edge.platform.addresses["gateway"], token(settings, driver, tenant_id=tenant)
    )
    try:
        assert _pair(app.hello().tracking_config) == (
            settings.passive_capture_interval_s,
            settings.passive_upload_interval_s,
        )
        dispatcher = token(settings, "dispatcher-e2e", Role.DISPATCHER, tenant)
        desktop.goto(f"{web_edge.url}/dashboard/#token={dispatcher}")
        desktop.click("summary")
        desktop.wait(f"{RESULT}.startsWith('In force: the platform')")
        assert float(desktop.eval(_value("passiveUploadInterval"))) == (
            settings.passive_upload_interval_s
        )

        desktop.fill(f"{PANEL} #tracking-passiveCaptureInterval", "20")
        desktop.fill(f"{PANEL} #tracking-passiveUploadInterval", "200")
        desktop.click(f"{PANEL} button[type=submit]")
        assert "Saved" in desktop.wait(f"{RESULT}.startsWith('Saved') && {RESULT}")
        pushed = app.recv().tracking_config  # the idle app: the passive pair
        assert pushed.mode == driver_pb2.TRACKING_MODE_PASSIVE
        assert _pair(pushed) == (20, 200)

        # Uploads less often than captures: refused, with the field named, nothing changed.
        desktop.fill(f"{PANEL} #tracking-passiveUploadInterval", "10")
        desktop.click(f"{PANEL} button[type=submit]")
        refused = desktop.wait(f"{RESULT}.startsWith('Invalid input') && {RESULT}")
        assert "intervals.passive_upload_interval" in refused
        desktop.screenshot(screenshots / "dashboard-tracking.png")
        with grpc.insecure_channel(web_edge.platform.addresses["tracking"]) as channel:
            kept = fleet_service_pb2_grpc.FleetServiceStub(channel).GetTrackingIntervals(
                fleet_service_pb2.GetTrackingIntervalsRequest(),
                metadata=(("authorization", f"Bearer {dispatcher}"),),
                timeout=30,
            )
        assert kept.intervals.passive_upload_interval.ToSeconds() == 200

        desktop.click(f"{PANEL} button[data-action=defaults]")
        desktop.wait(f"{RESULT}.includes('the platform')")
        assert _pair(app.recv().tracking_config) == (
            settings.passive_capture_interval_s,
            settings.passive_upload_interval_s,
        )
        assert float(desktop.eval(_value("passiveCaptureInterval"))) == (
            settings.passive_capture_interval_s
        )
        assert desktop.console_errors() == []
    finally:
        app.close()
