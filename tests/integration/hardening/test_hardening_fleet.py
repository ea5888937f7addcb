"""Tenant isolation of FleetService: drivers stream through the gateway with their tenant's
token; a dispatcher searches, watches, reads states and paths, and sees geofences and their
events of its own tenant only. Another tenant's driver or fence looks like none at all."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core import topics
from core.geo import LatLng
from tests.helpers import wait_until
from tests.integration.hardening.conftest import Hardened
from tests.integration.hardening.support import DOOR, TIMEOUT_S, Tenant, drive, status_of
from tests.integration.ingest_support import DriverApp

pytestmark = pytest.mark.integration
FAR = LatLng(DOOR.lat + 0.005, DOOR.lng)  # ~550 m north of the door
ENTER, EXIT = tracking_pb2.GEOFENCE_EVENT_KIND_ENTER, tracking_pb2.GEOFENCE_EVENT_KIND_EXIT


@dataclass
class Side:
    """One tenant with one connected driver and one next sequence number."""

    tenant: Tenant
    driver_id: str
    app: DriverApp
    seq: int = 1

    def move(self, where: LatLng) -> None:
        drive(self.app, self.seq, where)
        self.seq += 1


@pytest.fixture(scope="module")
def sides(hardened: Hardened) -> Iterator[tuple[Side, Side]]:
    made = []
    for _ in range(2):
        tenant = Tenant(hardened)
        driver_id = f"fleet-{uuid.uuid4().hex[:8]}"  # not registered: live state only
        side = Side(tenant, driver_id, tenant.app(driver_id))
        side.move(FAR)
        made.append(side)
    yield made[0], made[1]
    for side in made:
        side.app.close()
        side.tenant.close()


def _found(side: Side) -> set[str]:
    circle = common_pb2.Circle(center=common_pb2.LatLng(lat=FAR.lat, lng=FAR.lng), radius_m=500)
    request = fleet_service_pb2.SearchDriversRequest(circle=circle, limit=1000)
    response = side.tenant.fleet.SearchDrivers(request, metadata=side.tenant.md, timeout=TIMEOUT_S)
    return {m.driver.driver_id for m in response.drivers}


def test_search_finds_own_drivers_only(sides: tuple[Side, Side]) -> None:
    a, b = sides
    wait_until(lambda: a.driver_id in _found(a) and b.driver_id in _found(b), TIMEOUT_S)
    assert b.driver_id not in _found(a) and a.driver_id not in _found(b)


def test_driver_state_and_path_of_another_tenant_are_not_found(sides: tuple[Side, Side]) -> None:
    a, b = sides
    wait_until(lambda: a.driver_id in _found(a), TIMEOUT_S)

    def state(side: Side, driver_id: str) -> Any:
        request = fleet_service_pb2.GetDriverStateRequest(driver_id=driver_id)
        return side.tenant.fleet.GetDriverState(request, metadata=side.tenant.md)

    def path(side: Side, driver_id: str) -> Any:
        start, end = Timestamp(), Timestamp()
        start.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        end.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
        request = fleet_service_pb2.GetDriverPathRequest(driver_id=driver_id, start=start, end=end)
        return side.tenant.fleet.GetDriverPath(request, metadata=side.tenant.md)

    assert state(a, a.driver_id).driver.driver_id == a.driver_id
    wait_until(lambda: len(path(a, a.driver_id).points) >= 2, TIMEOUT_S, what="a's path")
    missing = f"nobody-{uuid.uuid4().hex[:6]}"
    for read in (state, path):
        code, message = status_of(lambda r=read: r(b, a.driver_id))  # type: ignore[misc]
        missing_code, missing_message = status_of(lambda r=read: r(b, missing))  # type: ignore[misc]
        assert code == missing_code == grpc.StatusCode.NOT_FOUND
        assert message.replace(a.driver_id, "ID") == missing_message.replace(missing, "ID")


def test_watch_fleet_shows_own_drivers_only(sides: tuple[Side, Side]) -> None:
    a, b = sides
    wait_until(lambda: b.driver_id in _found(b), TIMEOUT_S)
    call = b.tenant.fleet.WatchFleet(
        fleet_service_pb2.WatchFleetRequest(), metadata=b.tenant.md, timeout=TIMEOUT_S
    )
    try:
        messages = iter(call)
        first = next(messages)
        assert b.driver_id in {d.driver_id for d in first.drivers}
        assert a.driver_id not in {d.driver_id for d in first.drivers}
        a.move(FAR)  # A's driver moves first: B must never hear of it
        b.move(FAR)
        while True:
            seen = {d.driver_id for d in next(messages).drivers}
            assert a.driver_id not in seen
            if b.driver_id in seen:
                break
    finally:
        call.cancel()  # type: ignore[no-untyped-call]


def _fence(side: Side, order_id: str = "") -> str:
    circle = common_pb2.Circle(center=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng), radius_m=80)
    fence = tracking_pb2.Geofence(
        name="door", circle=circle, purpose=tracking_pb2.GEOFENCE_PURPOSE_AREA, order_id=order_id
    )
    request = fleet_service_pb2.CreateGeofenceRequest(geofence=fence)
    created = side.tenant.fleet.CreateGeofence(request, metadata=side.tenant.md, timeout=TIMEOUT_S)
    return str(created.geofence.geofence_id)


def test_geofences_of_another_tenant_look_absent(sides: tuple[Side, Side]) -> None:
    a, b = sides
    fence = _fence(a)
    md: dict[str, Any] = {"metadata": b.tenant.md, "timeout": TIMEOUT_S}
    code, message = status_of(
        lambda: b.tenant.fleet.GetGeofence(
            fleet_service_pb2.GetGeofenceRequest(geofence_id=fence), **md
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and fence in message
    b.tenant.fleet.DeleteGeofence(fleet_service_pb2.DeleteGeofenceRequest(geofence_id=fence), **md)
    listed = b.tenant.fleet.ListGeofences(fleet_service_pb2.ListGeofencesRequest(), **md)
    assert fence not in {g.geofence_id for g in listed.geofences}
    mine = a.tenant.fleet.GetGeofence(
        fleet_service_pb2.GetGeofenceRequest(geofence_id=fence), metadata=a.tenant.md
    )
    assert mine.geofence.geofence_id == fence  # B's delete did nothing
    # A fence may not name another tenant's order (the same answer as an unknown order).
    a_order = a.tenant.create().order.order_id
    code, message = status_of(lambda: _fence(b, a_order))
    missing = f"ord_{uuid.uuid4().hex}"
    assert (code, message.replace(a_order, "ID")) == (
        status_of(lambda: _fence(b, missing))[0],
        status_of(lambda: _fence(b, missing))[1].replace(missing, "ID"),
    )
    assert code == grpc.StatusCode.NOT_FOUND


def _stored(h: Hardened, fence: str, driver: str, kind: int) -> bool:
    client = redis.Redis.from_url(h.settings.redis_url)
    try:
        entries: Any = client.xrange(topics.GEOFENCE_EVENTS)
    finally:
        client.close()
    for _, fields in entries:
        event = tracking_pb2.GeofenceEvent.FromString(fields[b"data"])
        if (event.geofence_id, event.driver_id, event.kind) == (fence, driver, kind):
            return True
    return False


def _replay(side: Side, fences: list[str], count: int) -> list[tuple[str, str, int]]:
    request = fleet_service_pb2.WatchGeofenceEventsRequest(geofence_ids=fences, after_cursor="0-0")
    call = side.tenant.fleet.WatchGeofenceEvents(
        request, metadata=side.tenant.md, timeout=TIMEOUT_S
    )
    try:
        events = iter(call)
        found: list[tuple[str, str, int]] = []
        for _ in range(count):
            event = next(events).event
            found.append((event.geofence_id, event.driver_id, int(event.kind)))
        return found
    finally:
        call.cancel()  # type: ignore[no-untyped-call]


def test_fences_watch_and_report_their_own_tenant_only(
    hardened: Hardened, sides: tuple[Side, Side]
) -> None:
    a, b = sides
    fence_a, fence_b = _fence(a), _fence(b)  # both watch every driver (of their tenant)
    for side, fence, where, kind in (
        (a, fence_a, DOOR, ENTER),
        (b, fence_b, DOOR, ENTER),
        (a, fence_a, FAR, EXIT),
        (b, fence_b, FAR, EXIT),
    ):
        side.move(where)
        wait_until(
            lambda f=fence, d=side.driver_id, k=kind: _stored(hardened, f, d, k),  # type: ignore[misc]
            TIMEOUT_S,
        )
    # A fence never fired for the other tenant's driver.
    assert not _stored(hardened, fence_a, b.driver_id, ENTER)
    assert not _stored(hardened, fence_b, a.driver_id, ENTER)
    # Asking for both fences, each tenant gets only its own fence's events, although the
    # stream interleaves them (A enter, B enter, A exit, B exit).
    both = [fence_a, fence_b]
    for side, fence in ((a, fence_a), (b, fence_b)):
        expected = [(fence, side.driver_id, ENTER), (fence, side.driver_id, EXIT)]
        assert _replay(side, both, 2) == expected
