"""FleetService against the real platform: driver search by every shape (the isochrone on the
Malta road graph), status filters, bad input, auth; geofence CRUD; geofence events through the
engine and WatchGeofenceEvents with resume; WatchFleet snapshot and coalesced updates.

Drivers are written straight into the platform's Redis in the live-state shape of
``core.live_state_keys``; results are narrowed to this module's drivers, so drivers other
tests put in the same Redis do not disturb it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc, tracking_pb2

from core import live_state_keys as keys
from core import topics
from core.auth import Role, issue_token
from core.bus import Bus
from core.db import Database
from core.geo import LatLng, haversine_m
from tests.integration.conftest import Platform
from tracking.fleet_watch import watch_fleet
from tracking.geofence_observer import GeofenceObserver
from tracking.geofences import GeofenceStore
from tracking.positions import Fix, PositionUpdate

pytestmark = pytest.mark.integration

IDLE, OFFLINE = common_pb2.DRIVER_STATUS_IDLE, common_pb2.DRIVER_STATUS_OFFLINE
RUN = uuid.uuid4().hex[:6]
# The tenant of this module's drivers, fences and dispatcher token.
TENANT = f"tenant-{RUN}"
# Road positions (snapped with OSRM) around Valletta's Grand Harbour.
CENTER = LatLng(35.89737, 14.512286)  # Valletta
PLACES = {
    "valletta": LatLng(35.899946, 14.514914),  # 372 m, ~167 s by road
    "floriana": LatLng(35.893452, 14.506938),  # 650 m, ~136 s
    "senglea": LatLng(35.887486, 14.516471),  # 1162 m across the harbour, ~780 s around it
    "birgu": LatLng(35.887036, 14.523073),  # 1505 m, ~709 s
    "kalkara": LatLng(35.888983, 14.523891),  # 1401 m, ~759 s
    "marsa": LatLng(35.879284, 14.495087),  # 2539 m, ~338 s
}
TIMEOUT_S = 10.0
# The generated stubs are typed for the blocking API; these are grpc.aio stubs.
Stub = Any
Auth = list[tuple[str, str]]


def _id(place: str) -> str:
    return f"fleet-{RUN}-{place}"


def _mine(matches: list[fleet_service_pb2.DriverMatch]) -> list[str]:
    return [
        m.driver.driver_id.rsplit("-", 1)[1] for m in matches if f"-{RUN}-" in m.driver.driver_id
    ]


def _ll(p: LatLng) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=p.lat, lng=p.lng)


async def _put_driver(client: aioredis.Redis, place: str, position: LatLng, status: int) -> None:
    driver = _id(place)
    await client.geoadd(keys.DRIVERS_GEO, (position.lng, position.lat, driver))
    await client.hset(
        keys.driver_key(driver),
        mapping={
            keys.FIELD_LAT: repr(position.lat),
            keys.FIELD_LNG: repr(position.lng),
            keys.FIELD_HEADING: "90.0",
            keys.FIELD_SPEED: "0.0",
            keys.FIELD_POSITION_AT: str(int(dt.datetime.now(dt.UTC).timestamp() * 1000)),
            keys.FIELD_STATUS: str(status),
            keys.FIELD_CURRENT_ORDER_ID: "",
            keys.FIELD_CURRENT_STOP_ID: "",
            keys.FIELD_SNAPPED_LAT: "",
            keys.FIELD_SNAPPED_LNG: "",
            keys.FIELD_NAME: place.title(),
            keys.FIELD_TENANT: TENANT,
        },
    )


@pytest.fixture(scope="module")
async def redis_client(platform: Platform) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(platform.settings.redis_url)
    for place, position in PLACES.items():
        await _put_driver(client, place, position, OFFLINE if place == "senglea" else IDLE)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def fleet(platform: Platform) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(platform.addresses["tracking"]) as channel:
        yield fleet_service_pb2_grpc.FleetServiceStub(channel)


@pytest.fixture(scope="module")
def auth(platform: Platform) -> list[tuple[str, str]]:
    token = issue_token(platform.settings, "dispatcher-1", Role.DISPATCHER, f"tenant-{RUN}")
    return [("authorization", f"Bearer {token}")]


async def _search(
    fleet: Stub,
    auth: Auth,
    **area: object,
) -> list[fleet_service_pb2.DriverMatch]:
    request = fleet_service_pb2.SearchDriversRequest(limit=1000, **area)  # type: ignore[arg-type]
    response = await fleet.SearchDrivers(request, metadata=auth, timeout=TIMEOUT_S)
    return list(response.drivers)


async def test_circle_nearest_first_without_offline(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    circle = common_pb2.Circle(center=_ll(CENTER), radius_m=1300)
    found = await _search(fleet, auth, circle=circle)
    assert _mine(found) == ["valletta", "floriana"]  # senglea is offline
    distances = [m.distance_m for m in found]
    assert distances == sorted(distances)
    _assert_state(found, "valletta", IDLE)
    offline = await _search(fleet, auth, circle=circle, statuses=[OFFLINE])
    assert _mine(offline) == ["senglea"]
    _assert_state(offline, "senglea", OFFLINE)


def _assert_state(found: list[fleet_service_pb2.DriverMatch], place: str, status: int) -> None:
    """The match carries the driver's live state as stored (read with the status filter)."""
    driver = next(m.driver for m in found if m.driver.driver_id == _id(place))
    assert driver.name == place.title()
    assert driver.status == status
    assert driver.heading_deg == 90.0 and driver.speed_mps == 0.0
    assert (driver.position.lat, driver.position.lng) == (PLACES[place].lat, PLACES[place].lng)
    assert driver.position_at.seconds > 0


async def test_a_large_circle_still_finds_the_exact_nearest_page(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    """The search grows its radius from a few hundred metres and skips drivers it may not
    show: the page is still the nearest wanted drivers of the whole circle, in order."""
    origin = LatLng(36.2, 14.2)  # at sea north of Gozo: nobody else's drivers around
    line = {
        f"line{i:02d}": LatLng(origin.lat + i * 400 / 111_195, origin.lng) for i in range(1, 31)
    }
    for place, position in line.items():
        await _put_driver(redis_client, place, position, OFFLINE if place < "line06" else IDLE)
    circle = common_pb2.Circle(center=_ll(origin), radius_m=20_000)
    request = fleet_service_pb2.SearchDriversRequest(circle=circle, limit=5)
    page = (await fleet.SearchDrivers(request, metadata=auth, timeout=TIMEOUT_S)).drivers
    assert _mine(list(page)) == ["line06", "line07", "line08", "line09", "line10"]
    assert [round(m.distance_m / 100) for m in page] == [24, 28, 32, 36, 40]
    everyone = await _search(fleet, auth, circle=circle)
    assert len(_mine(everyone)) == 25


async def test_a_small_share_of_wanted_drivers_is_still_found_nearest_first(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    """One driver in ten may be shown: the search widens its scan by the share it sees, and
    the page is still exactly the nearest wanted drivers."""
    origin = LatLng(36.45, 14.6)  # at sea east of Gozo, far from the other tests' drivers
    rng = random.Random(7)
    crowd = {
        f"crowd{i:03d}": LatLng(
            origin.lat + rng.uniform(-900, 900) / 111_195,
            origin.lng + rng.uniform(-900, 900) / 90_000,
        )
        for i in range(300)
    }
    for i, (place, position) in enumerate(sorted(crowd.items())):
        await _put_driver(redis_client, place, position, IDLE if i % 10 == 0 else OFFLINE)
    wanted = sorted(
        (place for i, place in enumerate(sorted(crowd)) if i % 10 == 0),
        key=lambda place: haversine_m(origin, crowd[place]),
    )
    circle = common_pb2.Circle(center=_ll(origin), radius_m=5_000)
    request = fleet_service_pb2.SearchDriversRequest(circle=circle, limit=12)
    page = (await fleet.SearchDrivers(request, metadata=auth, timeout=TIMEOUT_S)).drivers
    assert _mine(list(page)) == wanted[:12]
    assert _mine(await _search(fleet, auth, circle=circle)) == wanted


async def test_rectangle_is_exact(redis_client: aioredis.Redis, fleet: Stub, auth: Auth) -> None:
    box = common_pb2.BoundingBox(
        south_west=common_pb2.LatLng(lat=35.892, lng=14.504),
        north_east=common_pb2.LatLng(lat=35.902, lng=14.516),
    )
    assert sorted(_mine(await _search(fleet, auth, rectangle=box))) == ["floriana", "valletta"]


async def test_polygon_excludes_drivers_in_its_box_but_outside(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    triangle = common_pb2.Polygon(
        vertices=[
            common_pb2.LatLng(lat=35.885, lng=14.513),
            common_pb2.LatLng(lat=35.885, lng=14.527),
            common_pb2.LatLng(lat=35.891, lng=14.520),
        ]
    )
    found = await _search(
        fleet, auth, polygon=triangle, statuses=[IDLE, OFFLINE]
    )  # kalkara: in the box, not in the triangle
    assert sorted(_mine(found)) == ["birgu", "senglea"]


async def test_isochrone_orders_by_drive_time_and_skips_across_the_harbour(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    isochrone = tracking_pb2.Isochrone(center=_ll(CENTER), max_drive=Duration(seconds=360))
    found = await _search(fleet, auth, isochrone=isochrone, statuses=[IDLE, OFFLINE])
    # Senglea, Birgu and Kalkara are closer than Marsa as the crow flies, far by road.
    assert _mine(found) == ["floriana", "valletta", "marsa"]
    times = [m.drive_time_s for m in found]
    assert times == sorted(times) and all(0 < t <= 360 for t in times)
    _assert_state(found, "marsa", IDLE)


@pytest.mark.parametrize(
    ("area", "message"),
    [
        ({}, "one of circle"),
        ({"circle": common_pb2.Circle(center=common_pb2.LatLng(lat=35.9, lng=14.5))}, "radius_m"),
        (
            {"circle": common_pb2.Circle(center=common_pb2.LatLng(lat=float("nan")), radius_m=5)},
            "finite",
        ),
        ({"circle": common_pb2.Circle(center=_ll(CENTER), radius_m=1e9)}, "exceeds"),
        (
            {
                "rectangle": common_pb2.BoundingBox(
                    south_west=common_pb2.LatLng(lat=35.95, lng=14.4),
                    north_east=common_pb2.LatLng(lat=35.85, lng=14.5),
                )
            },
            "south_west.lat",
        ),
        (
            {
                "polygon": common_pb2.Polygon(
                    vertices=[
                        _ll(LatLng(0, 0)),
                        _ll(LatLng(1, 1)),
                        _ll(LatLng(0, 1)),
                        _ll(LatLng(1, 0)),
                    ]
                )
            },
            "intersects itself",
        ),
        ({"polygon": common_pb2.Polygon(vertices=[_ll(CENTER)])}, "at least 3"),
        ({"isochrone": tracking_pb2.Isochrone(center=_ll(CENTER))}, "max_drive"),
        (
            {
                "isochrone": tracking_pb2.Isochrone(
                    center=_ll(CENTER), max_drive=Duration(seconds=2**63 - 1)
                )
            },
            "exceeds the maximum",
        ),
        (
            {"circle": common_pb2.Circle(center=_ll(CENTER), radius_m=5), "statuses": [0]},
            "unspecified",
        ),
        ({"circle": common_pb2.Circle(center=_ll(CENTER), radius_m=5), "limit": 5000}, "limit"),
    ],
)
async def test_bad_searches_are_invalid_argument(
    fleet: Stub, auth: Auth, area: dict[str, object], message: str
) -> None:
    request = fleet_service_pb2.SearchDriversRequest(**area)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fleet.SearchDrivers(request, metadata=auth, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_no_token_is_unauthenticated(fleet: Stub) -> None:
    request = fleet_service_pb2.SearchDriversRequest(
        circle=common_pb2.Circle(center=_ll(CENTER), radius_m=100)
    )
    for call in (
        fleet.SearchDrivers(request, timeout=TIMEOUT_S),
        fleet.ListGeofences(fleet_service_pb2.ListGeofencesRequest(), timeout=TIMEOUT_S),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _circle_fence(
    name: str, center: LatLng, radius_m: float, drivers: list[str]
) -> tracking_pb2.Geofence:
    return tracking_pb2.Geofence(
        name=name,
        circle=common_pb2.Circle(center=_ll(center), radius_m=radius_m),
        purpose=tracking_pb2.GEOFENCE_PURPOSE_PICKUP,
        min_dwell=Duration(seconds=30),
        driver_ids=drivers,
    )


async def test_geofence_crud_and_paging(fleet: Stub, auth: Auth) -> None:
    created = []
    for i in range(3):
        request = fleet_service_pb2.CreateGeofenceRequest(
            geofence=_circle_fence(f"crud-{i}", CENTER, 100 + i, [])
        )
        response = await fleet.CreateGeofence(request, metadata=auth, timeout=TIMEOUT_S)
        assert response.geofence.geofence_id and response.geofence.circle.radius_m == 100 + i
        created.append(response.geofence.geofence_id)
    got = await fleet.GetGeofence(
        fleet_service_pb2.GetGeofenceRequest(geofence_id=created[1]), metadata=auth
    )
    assert got.geofence.name == "crud-1" and got.geofence.min_dwell.seconds == 30
    seen, token = [], ""
    while True:
        page = await fleet.ListGeofences(
            fleet_service_pb2.ListGeofencesRequest(page_size=2, page_token=token), metadata=auth
        )
        seen += [g.geofence_id for g in page.geofences]
        token = page.next_page_token
        if not token:
            break
    assert set(created) <= set(seen) and len(seen) == len(set(seen))
    await fleet.DeleteGeofence(
        fleet_service_pb2.DeleteGeofenceRequest(geofence_id=created[0]), metadata=auth
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fleet.GetGeofence(
            fleet_service_pb2.GetGeofenceRequest(geofence_id=created[0]), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    bad = tracking_pb2.Geofence(
        polygon=common_pb2.Polygon(vertices=[_ll(LatLng(0, 0)), _ll(LatLng(0, 1))])
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fleet.CreateGeofence(
            fleet_service_pb2.CreateGeofenceRequest(geofence=bad), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _update(driver: str, at: dt.datetime, position: LatLng) -> PositionUpdate:
    fix = Fix(driver, at, position, 5.0, 0.0, 0.0, at, tenant_id=TENANT)
    return PositionUpdate(
        driver, at, position, None, 0.0, 0.0, IDLE, "", "", (fix,), tenant_id=TENANT
    )


async def _events(
    fleet: Stub,
    auth: Auth,
    request: fleet_service_pb2.WatchGeofenceEventsRequest,
    count: int,
) -> list[tracking_pb2.GeofenceEvent]:
    call = fleet.WatchGeofenceEvents(request, metadata=auth)
    try:
        return [(await asyncio.wait_for(call.read(), TIMEOUT_S)).event for _ in range(count)]
    finally:
        call.cancel()


async def test_geofence_events_enter_exit_and_resume(
    platform: Platform, fleet: Stub, auth: Auth
) -> None:
    driver = _id("fence-driver")
    pickup = PLACES["floriana"]
    response = await fleet.CreateGeofence(
        fleet_service_pb2.CreateGeofenceRequest(
            geofence=_circle_fence("pickup", pickup, 80, [driver])
        ),
        metadata=auth,
    )
    fence_id = response.geofence.geofence_id
    database, bus = Database(platform.settings), Bus(platform.settings)
    await database.start()
    await bus.start()
    try:
        observer = GeofenceObserver(
            GeofenceStore(database, bus, platform.settings), bus, platform.settings
        )
        start = dt.datetime.now(dt.UTC)
        far = LatLng(pickup.lat + 0.005, pickup.lng)  # ~550 m north
        for seconds, position in ((0, far), (10, pickup), (20, pickup), (30, far)):
            await observer.on_positions(
                [_update(driver, start + dt.timedelta(seconds=seconds), position)]
            )
        wanted = fleet_service_pb2.WatchGeofenceEventsRequest(
            geofence_ids=[fence_id], driver_ids=[driver], after_cursor="0-0"
        )
        enter, exit_ = await _events(fleet, auth, wanted, 2)
        assert (enter.kind, exit_.kind) == (
            tracking_pb2.GEOFENCE_EVENT_KIND_ENTER,
            tracking_pb2.GEOFENCE_EVENT_KIND_EXIT,
        )
        assert enter.geofence_id == fence_id and enter.driver_id == driver and enter.cursor
        # Resume after the ENTER: the EXIT is replayed.
        wanted.after_cursor = enter.cursor
        (replayed,) = await _events(fleet, auth, wanted, 1)
        assert replayed.cursor == exit_.cursor
        # Resume after the EXIT, then a new ENTER arrives live (or in the replay: either way
        # it is the next event).
        wanted.after_cursor = exit_.cursor
        call = fleet.WatchGeofenceEvents(wanted, metadata=auth)
        try:
            await observer.on_positions([_update(driver, start + dt.timedelta(seconds=40), pickup)])
            live = (await asyncio.wait_for(call.read(), TIMEOUT_S)).event
        finally:
            call.cancel()
        assert live.kind == tracking_pb2.GEOFENCE_EVENT_KIND_ENTER
        state = await bus.redis.hgetall(keys.geofence_state_key(driver))
        assert fence_id.encode() in state
    finally:
        await bus.stop()
        await database.stop()


async def test_watch_fleet_snapshot_then_updates_and_removals(
    redis_client: aioredis.Redis, fleet: Stub, auth: Auth
) -> None:
    viewport = common_pb2.BoundingBox(
        south_west=common_pb2.LatLng(lat=35.892, lng=14.504),
        north_east=common_pb2.LatLng(lat=35.902, lng=14.516),
    )
    call = fleet.WatchFleet(fleet_service_pb2.WatchFleetRequest(viewport=viewport), metadata=auth)
    try:
        first = await asyncio.wait_for(call.read(), TIMEOUT_S)
        ids = {d.driver_id for d in first.drivers}
        assert {_id("valletta"), _id("floriana")} <= ids and _id("marsa") not in ids
        assert first.snapshot_complete
        moved_out = tracking_pb2.DriverState(
            driver_id=_id("valletta"), status=IDLE, position=_ll(PLACES["marsa"])
        )
        moved_in = tracking_pb2.DriverState(
            driver_id=_id("marsa"), status=IDLE, position=_ll(CENTER)
        )
        update = fleet_service_pb2.WatchFleetResponse(drivers=[moved_out, moved_in])
        await redis_client.publish(topics.fleet_channel(TENANT), update.SerializeToString())
        changed: set[str] = set()
        removed: set[str] = set()
        while _id("marsa") not in changed or _id("valletta") not in removed:
            message = await asyncio.wait_for(call.read(), TIMEOUT_S)
            changed |= {d.driver_id for d in message.drivers}
            removed |= set(message.removed_driver_ids)
        assert _id("valletta") not in changed
    finally:
        call.cancel()


async def test_watch_fleet_splits_a_large_snapshot_and_marks_its_end(
    redis_client: aioredis.Redis, platform: Platform
) -> None:
    settings = platform.settings.replace(fleet_message_max_drivers=2)
    request = fleet_service_pb2.WatchFleetRequest()  # the whole fleet: every test's drivers
    stream = watch_fleet(redis_client, settings, request, f"tenant-{RUN}")
    seen: list[str] = []
    try:
        while True:
            message = await asyncio.wait_for(anext(stream), TIMEOUT_S)
            assert 0 < len(message.drivers) <= 2
            seen += [d.driver_id for d in message.drivers]
            if message.snapshot_complete:
                break
    finally:
        await stream.aclose()
    assert len(seen) == len(set(seen)) and len(seen) > 2
    assert {_id(place) for place in PLACES} <= set(seen)
