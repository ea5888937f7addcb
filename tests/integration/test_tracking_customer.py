"""Customer tracking end to end: a driver drives an OSRM route through the real gateway past
the pickup and the drop-off while customers watch Track streams on two tracking processes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import tempfile
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2, order_service_pb2_grpc
from lastmile.tracking.v1 import (
    fleet_service_pb2,
    fleet_service_pb2_grpc,
    tracking_pb2,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)

from core import topics
from core.auth import tracking_token_digest
from core.bus import Bus
from core.db import Database
from core.geo import LatLng, haversine_m
from core.roads import RoadNetwork
from ops.servers import ManagedProcess
from ops.servers.process import free_port
from ops.stack import service_process, start_service
from tests.integration.conftest import Platform
from tests.integration.customer_support import (
    CustomerStream,
    TrackResponse,
    create_driver_and_order,
    dispatch_sets_status,
    sql,
    staff_metadata,
    wait_tracking_sees,
)
from tests.integration.ingest_support import DriverApp, batch, fix, now_s, token
from tracking import link_checks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
VALLETTA = LatLng(35.8960, 14.5110)
SLIEMA = LatLng(35.9126, 14.5045)
S = common_pb2.OrderStatus


@pytest.fixture(scope="module")
def tracking_b(platform: Platform) -> Iterator[str]:
    """A second tracking process on its own port (same Redis, same database)."""
    settings = platform.settings.replace(tracking_port=free_port())
    log_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-tracking-b-"))
    process: ManagedProcess = service_process("tracking", settings, log_dir)
    address = f"{settings.host}:{settings.tracking_port}"
    try:
        start_service(process, address)
        yield address
    finally:
        process.stop(grace=10.0)


def _is(status: int) -> Callable[[TrackResponse], bool]:
    return lambda m: m.WhichOneof("update") == "status" and m.status.status == status


def _position_at(seconds: int) -> Callable[[TrackResponse], bool]:
    return lambda m: (
        m.WhichOneof("update") == "position" and m.position.position_at.seconds >= seconds
    )


def _new_order(
    platform: Platform, pickup: LatLng = VALLETTA, drop_off: LatLng = SLIEMA
) -> tuple[str, str]:
    """An instant order of a new driver, through dispatch: (order id, tracking token)."""
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    dispatch = platform.addresses["dispatch"]
    return create_driver_and_order(platform.settings, dispatch, driver, pickup, drop_off)


def _drive_points(roads: RoadNetwork) -> list[LatLng]:
    geometry = roads.route([VALLETTA, SLIEMA]).geometry
    points = [geometry[0]]
    for point in geometry[1:]:  # about 40 m apart: an ETA refresh every few batches
        if haversine_m(points[-1], point) >= 40:
            points.append(point)
    return points


def test_customer_follows_the_drive_on_two_tracking_processes(
    platform: Platform, tracking_b: str, roads: RoadNetwork
) -> None:
    dsn, redis_url = platform.settings.database_url, platform.settings.redis_url
    points = _drive_points(roads)
    pickup_at, drop_at = len(points) // 4, len(points) - 4
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    order_id, tracking_token = create_driver_and_order(
        platform.settings,
        platform.addresses["dispatch"],
        driver,
        points[pickup_at],
        points[drop_at],
    )
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), driver)
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_TO_PICKUP"))
    on_a = CustomerStream(platform.addresses["tracking"], tracking_token)
    on_b = CustomerStream(tracking_b, tracking_token)
    app = DriverApp(platform.addresses["gateway"], token(platform.settings, driver))
    try:
        for stream in (on_a, on_b):
            first = stream.wait_for(lambda m: True)
            assert first.WhichOneof("update") == "snapshot"
        snapshot = on_a.received[0].snapshot
        assert snapshot.order_id == order_id and snapshot.driver_name == "Maria"
        assert snapshot.status == S.Value("ORDER_STATUS_TO_PICKUP") and snapshot.changes_allowed
        assert snapshot.instructions.text == "ring twice"
        app.hello()
        start = int(now_s()) - 3 * len(points)
        fixes = [fix(p, start + 3 * i) for i, p in enumerate(points)]
        status_after = {
            pickup_at: ["ORDER_STATUS_AT_PICKUP", "ORDER_STATUS_PICKED_UP"],
            drop_at - 6: ["ORDER_STATUS_NEARBY"],
            drop_at: ["ORDER_STATUS_DELIVERED"],
        }
        for seq, index in enumerate(range(0, len(fixes), 2), start=1):
            part = fixes[index : index + 2]
            assert app.send_and_wait(batch(seq, part)).WhichOneof("command") == "ack"
            for stream in (on_a, on_b):  # both customers, whichever process ingested it
                stream.wait_for(_position_at(part[-1].captured_at.seconds))
            for passed in sorted(k for k in status_after if index <= k < index + 2):
                for name in status_after.pop(passed):
                    dispatch_sets_status(dsn, order_id, S.Value(name))
                    on_a.wait_for(_is(S.Value(name)))
                    wait_tracking_sees(redis_url, driver, order_id, S.Value(name))
            if not status_after:
                break
            if index == pickup_at + 10:
                mid = _get_tracking(platform.addresses["tracking"], tracking_token)
                assert mid.status == S.Value("ORDER_STATUS_PICKED_UP") and not mid.changes_allowed
                assert mid.HasField("driver_position") and mid.HasField("eta")
                assert len(mid.route_line) >= 2
                assert [e.status for e in mid.timeline][-2:] == [
                    S.Value("ORDER_STATUS_AT_PICKUP"),
                    S.Value("ORDER_STATUS_PICKED_UP"),
                ]
        for stream in (on_a, on_b):
            assert stream.wait_end() == "OK"
    finally:
        app.close()
        on_a.close()
        on_b.close()

    for stream in (on_a, on_b):
        statuses = [int(m.status.status) for m in stream.of_kind("status")]
        for name in ("AT_PICKUP", "PICKED_UP", "NEARBY", "DELIVERED"):
            assert statuses.count(S.Value("ORDER_STATUS_" + name)) == 1, (name, statuses)
    _check_positions_on_the_road(on_a, roads, points)
    _check_etas_fall(on_a)
    recorded = sql(dsn, "SELECT count(*) AS n FROM eta_predictions WHERE order_id = $1", order_id)
    assert recorded[0]["n"] >= 3
    errors = sql(dsn, "SELECT error_s FROM eta_errors WHERE order_id = $1", order_id)
    assert len(errors) >= 3
    # The dispatchers' report counts the same predictions for this driver's delivery.
    report = _eta_accuracy(platform, driver)
    assert (report.overall.deliveries, report.overall.predictions) == (1, len(errors))
    assert sum(band.predictions for band in report.bands) == len(errors)


def _eta_accuracy(platform: Platform, driver: str) -> fleet_service_pb2.GetEtaAccuracyResponse:
    """FleetService.GetEtaAccuracy over the last day, for one driver."""
    now = dt.datetime.now(dt.UTC)
    request = fleet_service_pb2.GetEtaAccuracyRequest(driver_id=driver)
    request.start.FromDatetime(now - dt.timedelta(days=1))
    request.end.FromDatetime(now + dt.timedelta(minutes=1))
    with grpc.insecure_channel(platform.addresses["tracking"]) as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        return fleet.GetEtaAccuracy(request, metadata=staff_metadata(platform.settings), timeout=30)


def test_a_customer_is_never_sent_a_position_older_than_one_they_have(
    platform: Platform, roads: RoadNetwork
) -> None:
    """A processing round replayed after a crash publishes its positions again, and a stream
    that fell behind may hold positions older than its snapshot: the map must not jump back."""
    dsn, redis_url = platform.settings.database_url, platform.settings.redis_url
    points = _drive_points(roads)
    driver = f"drv-{uuid.uuid4().hex[:8]}"
    order_id, tracking_token = create_driver_and_order(
        platform.settings, platform.addresses["dispatch"], driver, points[-1], points[-2]
    )
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_ASSIGNED"), driver)
    dispatch_sets_status(dsn, order_id, S.Value("ORDER_STATUS_TO_PICKUP"))
    customer = CustomerStream(platform.addresses["tracking"], tracking_token)
    streams = [customer]
    app = DriverApp(platform.addresses["gateway"], token(platform.settings, driver))
    publisher = redis.Redis.from_url(redis_url)
    try:
        assert customer.wait_for(lambda m: True).WhichOneof("update") == "snapshot"
        app.hello()
        sent_s = int(now_s()) - 2
        assert app.send_and_wait(batch(1, [fix(points[1], sent_s)])).WhichOneof("command") == "ack"
        customer.wait_for(_position_at(sent_s))
        # The same channel the fan-out uses: an older position (a replay), then a newer one.
        for at_s in (sent_s - 30, sent_s + 1):
            update = TrackResponse()
            update.position.position.lat, update.position.position.lng = 35.9, 14.5
            update.position.position_at.FromSeconds(at_s)
            publisher.publish(topics.order_channel(order_id), update.SerializeToString())
        customer.wait_for(_position_at(sent_s + 1))
        # A stream opened now starts from the snapshot and gets nothing older than it.
        late = CustomerStream(platform.addresses["tracking"], tracking_token)
        streams.append(late)
        snapshot = late.wait_for(lambda m: True).snapshot
        assert snapshot.position_at.seconds == sent_s
        update.position.position_at.FromSeconds(sent_s - 1)
        publisher.publish(topics.order_channel(order_id), update.SerializeToString())
        update.position.position_at.FromSeconds(sent_s + 2)
        publisher.publish(topics.order_channel(order_id), update.SerializeToString())
        late.wait_for(_position_at(sent_s + 2))
    finally:
        app.close()
        publisher.close()
        for stream in streams:
            stream.close()
    shown = [m.position.position_at.seconds for m in customer.of_kind("position")]
    assert shown == [sent_s, sent_s + 1], shown
    assert [m.position.position_at.seconds for m in late.of_kind("position")] == [sent_s + 2]


def test_link_checks_end_the_streams_of_revoked_expired_and_unknown_links(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One re-check reads every watched link (in batches) and ends exactly the streams whose
    link no longer opens their order."""
    dsn = platform.settings.database_url
    orders = [
        _new_order(platform, a, b)
        for a, b in ((VALLETTA, SLIEMA), (SLIEMA, VALLETTA), (VALLETTA, SLIEMA))
    ]
    (kept, kept_token), (revoked, revoked_token), (expired, expired_token) = orders
    sql(dsn, "UPDATE orders SET tracking_token_revoked = true WHERE order_id = $1", revoked)
    sql(
        dsn,
        "UPDATE orders SET tracking_token_expires_at = now() - interval '1 second'"
        " WHERE order_id = $1",
        expired,
    )
    monkeypatch.setattr(link_checks, "BATCH", 2)  # several queries for the 4 links
    ended: list[str] = []

    async def check_once() -> int:
        database = Database(platform.settings)
        await database.start()
        # Not started: a check reads PostgreSQL only (the bus carries the announcements).
        checks = link_checks.LinkChecks(platform.settings, database, Bus(platform.settings))
        watched = [
            (kept_token, kept, "kept"),
            (kept_token, revoked, "kept link, another order"),
            (revoked_token, revoked, "revoked"),
            (expired_token, expired, "expired"),
            ("no-such-link", kept, "unknown"),
        ]
        try:
            async with contextlib.AsyncExitStack() as stack:
                for link, order_id, name in watched:
                    await stack.enter_async_context(
                        checks.watch(
                            tracking_token_digest(link), order_id, partial(ended.append, name)
                        )
                    )
                # An announced revocation re-checks only the streams of its order.
                assert await checks.check(revoked) == 2
                assert sorted(ended) == ["kept link, another order", "revoked"]
                ended.clear()
                return await checks.check()
        finally:
            await database.stop()

    assert asyncio.run(check_once()) == 4
    assert sorted(ended) == ["expired", "kept link, another order", "revoked", "unknown"]


def test_a_revoked_link_ends_its_streams_on_every_process_at_once(
    platform: Platform, tracking_b: str
) -> None:
    """Dispatch announces the revocation: both processes end the link's streams now, not at
    their next periodic re-check."""
    assert platform.settings.track_token_check_s >= 30  # so an end within 10 s is the announcement
    order_id, tracking_token = _new_order(platform)
    streams = [
        CustomerStream(a, tracking_token) for a in (platform.addresses["tracking"], tracking_b)
    ]
    try:
        for stream in streams:
            stream.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
        with grpc.insecure_channel(platform.addresses["dispatch"]) as channel:
            # A new link replaces the old one: the old link's streams end too.
            order_service_pb2_grpc.OrderServiceStub(channel).RevokeTrackingToken(
                order_service_pb2.RevokeTrackingTokenRequest(order_id=order_id, issue_new=True),
                metadata=staff_metadata(platform.settings),
            )
        assert [stream.wait_end(timeout=10.0) for stream in streams] == ["OK", "OK"]
    finally:
        for stream in streams:
            stream.close()


def _check_positions_on_the_road(
    stream: CustomerStream, roads: RoadNetwork, driven: list[LatLng]
) -> None:
    positions = [m.position.position for m in stream.of_kind("position")]
    assert len(positions) >= 10
    for p in positions:
        shown = LatLng(p.lat, p.lng)
        # Rounded to 4 decimals: within ~7 m of the snapped point, which is on the road.
        assert haversine_m(shown, roads.nearest(shown).location) < 8.0
        assert min(haversine_m(shown, d) for d in driven) < 30.0  # this driver, no other


def _check_etas_fall(stream: CustomerStream) -> None:
    """After the pickup the remaining distance only shrinks, and the ETA with it."""
    picked = next(
        i for i, m in enumerate(stream.received) if _is(S.Value("ORDER_STATUS_PICKED_UP"))(m)
    )
    nearby = next(
        i for i, m in enumerate(stream.received) if _is(S.Value("ORDER_STATUS_NEARBY"))(m)
    )
    etas = [m.eta for m in stream.received[picked:nearby] if m.WhichOneof("update") == "eta"]
    assert len(etas) >= 3, etas
    remaining = [e.remaining_distance_m for e in etas]
    assert all(b <= a + 25.0 for a, b in itertools.pairwise(remaining)), remaining
    assert remaining[-1] < remaining[0] - 300
    assert etas[-1].eta.ToDatetime() < etas[0].eta.ToDatetime()


def _get_tracking(address: str, tracking_token: str) -> tracking_pb2.TrackingSnapshot:
    with grpc.insecure_channel(address) as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        request = tracking_service_pb2.GetTrackingRequest(tracking_token=tracking_token)
        return stub.GetTracking(request, timeout=10).snapshot


def _error_of(address: str, tracking_token: str) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as polled:
            stub.GetTracking(
                tracking_service_pb2.GetTrackingRequest(tracking_token=tracking_token), timeout=10
            )
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.Track(tracking_service_pb2.TrackRequest(tracking_token=tracking_token)))
    assert polled.value.code() == streamed.value.code()
    return polled.value.code(), polled.value.details() or ""


def test_wrong_expired_or_revoked_links_get_no_data(platform: Platform) -> None:
    dsn = platform.settings.database_url
    address = platform.addresses["tracking"]
    order_id, tracking_token = _new_order(platform)
    assert _get_tracking(address, tracking_token).order_id == order_id

    code, detail = _error_of(address, tracking_token[:-2] + "xx")
    assert code == grpc.StatusCode.NOT_FOUND and order_id not in detail
    code, _ = _error_of(address, "")
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    sql(dsn, "UPDATE orders SET tracking_token_expires_at = $2 WHERE order_id = $1", order_id, past)
    code, detail = _error_of(address, tracking_token)
    assert code == grpc.StatusCode.UNAUTHENTICATED and order_id not in detail

    sql(
        dsn,
        "UPDATE orders SET tracking_token_expires_at = NULL, tracking_token_revoked = true"
        " WHERE order_id = $1",
        order_id,
    )
    code, detail = _error_of(address, tracking_token)
    assert code == grpc.StatusCode.UNAUTHENTICATED and order_id not in detail


def test_tracking_through_the_edge(platform: Platform) -> None:
    order_id, tracking_token = _new_order(platform)
    assert _get_tracking(platform.edge_address, tracking_token).order_id == order_id
    stream = CustomerStream(platform.edge_address, tracking_token)
    try:
        first: TrackResponse = stream.wait_for(lambda m: True)
        assert first.snapshot.order_id == order_id
        assert first.snapshot.status == S.Value("ORDER_STATUS_PENDING")
        dispatch_sets_status(
            platform.settings.database_url, order_id, S.Value("ORDER_STATUS_CANCELLED")
        )
        stream.wait_for(_is(S.Value("ORDER_STATUS_CANCELLED")))
        assert stream.wait_end() == "OK"
    finally:
        stream.close()
