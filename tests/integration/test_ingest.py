"""Live-tracking ingest end to end: driver apps on the generated grpcio stubs, a real gateway
and tracking process, Redis, PostgreSQL and the OSRM graph."""

from __future__ import annotations

import datetime as dt
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc, tracking_pb2

from core import topics
from core.auth import Role
from core.geo import LatLng, haversine_m
from core.roads import RoadNetwork
from core.settings import Settings
from ops.servers import ManagedProcess, PostgresServer, RedisServer
from ops.servers.process import free_port
from ops.stack import service_process, start_service
from tests.helpers import wait_until
from tests.integration.ingest_support import (
    DriverApp,
    Request,
    batch,
    chunks,
    fix,
    history_rows,
    now_s,
    token,
    trace,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VALLETTA = LatLng(35.8960, 14.5110)
SLIEMA = LatLng(35.9126, 14.5045)


@dataclass
class Ingest:
    """A gateway and a tracking process of our own (the gateway gets killed in a test)."""

    settings: Settings
    gateway: ManagedProcess
    log_dir: Path

    @property
    def gateway_address(self) -> str:
        return f"{self.settings.host}:{self.settings.gateway_port}"

    @property
    def tracking_address(self) -> str:
        return f"{self.settings.host}:{self.settings.tracking_port}"

    def restart_gateway(self) -> None:
        self.gateway = service_process("gateway", self.settings, self.log_dir)
        start_service(self.gateway, self.gateway_address)


@pytest.fixture(scope="module")
def ingest(
    postgres_server: PostgresServer, redis_server: RedisServer, road_graph: Path
) -> Iterator[Ingest]:
    """Gateway + tracking on free ports, against the session's servers."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-ingest-"))
    settings = Settings.from_env({}).replace(
        host="127.0.0.1",
        gateway_port=free_port(),
        tracking_port=free_port(),
        metrics_port=0,
        data_dir=data_dir,
        database_url=postgres_server.dsn,
        redis_url=redis_server.url,
        graph_dir=road_graph.parent,
        osm_pbf=REPO / "maps" / "malta.osm.pbf",
        shutdown_grace_s=2.0,
        # Claim a killed processor's entries fast; not used by these tests' gateway kills.
        processor_claim_idle_ms=5000,
        processor_block_ms=200,
    )
    log_dir = data_dir / "logs"
    tracking = service_process("tracking", settings, log_dir)
    gateway = service_process("gateway", settings, log_dir)
    state = Ingest(settings, gateway, log_dir)
    try:
        start_service(tracking, state.tracking_address)
        start_service(gateway, state.gateway_address)
        yield state
    finally:
        state.gateway.stop(grace=10.0)
        tracking.stop(grace=10.0)


@pytest.fixture
def driver_id() -> str:
    return f"drv-{uuid.uuid4().hex[:10]}"


def _connect(ingest: Ingest, driver: str) -> DriverApp:
    return DriverApp(ingest.gateway_address, token(ingest.settings, driver))


Metadata = tuple[tuple[str, str | bytes], ...]


def _fleet(
    ingest: Ingest,
) -> tuple[grpc.Channel, fleet_service_pb2_grpc.FleetServiceStub, Metadata]:
    channel = grpc.insecure_channel(ingest.tracking_address)
    bearer = token(ingest.settings, "dispatcher-1", Role.DISPATCHER)
    return (
        channel,
        fleet_service_pb2_grpc.FleetServiceStub(channel),
        (("authorization", f"Bearer {bearer}"),),
    )


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _route_points(roads: RoadNetwork, count: int) -> list[LatLng]:
    geometry = roads.route([VALLETTA, SLIEMA]).geometry
    assert len(geometry) >= count
    step = len(geometry) / count
    return [geometry[int(i * step)] for i in range(count)]


def _wait_history(ingest: Ingest, driver: str, expected: int) -> list[Any]:
    """The driver's history once it holds at least ``expected`` rows."""

    def enough() -> list[Any]:
        rows = history_rows(ingest.settings.database_url, driver)
        return rows if len(rows) >= expected else []

    return wait_until(enough, timeout=30, what=f"{expected} history rows of {driver}")


def test_driver_drives_a_route_every_acked_fix_stored_once_live_and_snapped(
    ingest: Ingest, roads: RoadNetwork, driver_id: str
) -> None:
    points = _route_points(roads, 60)
    fixes = trace(points, now_s() - 120)
    app = _connect(ingest, driver_id)
    welcome = app.hello()
    assert welcome.driver_id == driver_id and welcome.last_acked_seq == 0
    assert welcome.tracking_config.mode == driver_pb2.TRACKING_MODE_PASSIVE
    assert welcome.tracking_config.max_batch_size == ingest.settings.ingest_max_batch_size
    for seq, part in enumerate(chunks(fixes, 10), start=1):
        response = app.send_and_wait(batch(seq, part))
        assert response.WhichOneof("command") == "ack" and response.ack.seq == seq
    app.close()

    rows = _wait_history(ingest, driver_id, len(fixes))
    assert len(rows) == len(fixes)
    assert len({r["recorded_at"] for r in rows}) == len(fixes)
    # Ingest snaps the fix it shows (a round's latest per driver); the path reader the rest.
    stored_snapped = [r for r in rows if r["snapped_lat"] is not None]
    assert 1 <= len(stored_snapped) <= len(chunks(fixes, 10))
    assert rows[-1]["snapped_lat"] is not None

    channel, fleet, md = _fleet(ingest)
    with channel:
        state = wait_until(
            lambda: (
                (
                    s := fleet.GetDriverState(
                        fleet_service_pb2.GetDriverStateRequest(driver_id=driver_id), metadata=md
                    ).driver
                ).position_at.seconds
                == fixes[-1].captured_at.seconds
                and s
            ),
            timeout=10,
            what="live state at the last fix",
        )
        assert state.status == common_pb2.DRIVER_STATUS_IDLE
        path = fleet.GetDriverPath(
            fleet_service_pb2.GetDriverPathRequest(
                driver_id=driver_id,
                start=_stamp(now_s() - 3600),
                end=_stamp(now_s() + 60),
                snapped=True,
            ),
            metadata=md,
        ).points
    assert len(path) == len(fixes)
    assert [p.fix.captured_at for p in path] == [f.captured_at for f in fixes]
    for point in path:
        raw = LatLng(point.fix.position.lat, point.fix.position.lng)
        assert point.HasField("snapped")
        snapped = LatLng(point.snapped.lat, point.snapped.lng)
        assert haversine_m(snapped, roads.nearest(raw).location) < 3.0
        assert haversine_m(snapped, raw) < 10.0


def test_reconnect_and_resend_loses_nothing_and_duplicates_nothing(
    ingest: Ingest, roads: RoadNetwork, driver_id: str
) -> None:
    fixes = trace(_route_points(roads, 40), now_s() - 100)
    parts = chunks(fixes, 5)  # 8 batches
    app = _connect(ingest, driver_id)
    app.hello()
    for seq in (1, 2, 3, 4):
        assert app.send_and_wait(batch(seq, parts[seq - 1])).ack.seq == seq
    app.close()

    again = _connect(ingest, driver_id)
    welcome = again.hello()
    assert welcome.last_acked_seq == 4
    # An app that resends too much: 2..8; 2..4 are acked again, not stored twice.
    for seq in range(2, 9):
        response = again.send_and_wait(batch(seq, parts[seq - 1]))
        assert response.WhichOneof("command") == "ack" and response.ack.seq == seq
    again.close()
    rows = _wait_history(ingest, driver_id, len(fixes))
    assert len(rows) == len(fixes)


def test_sigkill_of_the_gateway_mid_drive_loses_no_acked_fix(
    ingest: Ingest, roads: RoadNetwork, driver_id: str
) -> None:
    fixes = trace(_route_points(roads, 60), now_s() - 100)
    parts = chunks(fixes, 5)  # 12 batches
    app = _connect(ingest, driver_id)
    app.hello()
    acked = 0
    for seq in range(1, 7):
        acked = app.send_and_wait(batch(seq, parts[seq - 1])).ack.seq
    # Two more in flight when the process dies: acked or not, the app resends what is not.
    app.send(batch(7, parts[6]))
    app.send(batch(8, parts[7]))
    assert ingest.gateway.pid is not None
    os.killpg(ingest.gateway.pid, signal.SIGKILL)
    with pytest.raises((grpc.RpcError, EOFError)):
        while True:
            response = app.recv()
            if response.WhichOneof("command") == "ack":
                acked = response.ack.seq
    app.close()
    ingest.restart_gateway()

    again = _connect(ingest, driver_id)
    welcome = again.hello()
    assert acked <= welcome.last_acked_seq <= 8
    for seq in range(welcome.last_acked_seq + 1, len(parts) + 1):
        assert again.send_and_wait(batch(seq, parts[seq - 1])).ack.seq == seq
    again.close()
    rows = _wait_history(ingest, driver_id, len(fixes))
    assert len(rows) == len(fixes)


def test_a_gateway_shutting_down_ends_streams_with_unavailable(
    ingest: Ingest, roads: RoadNetwork, driver_id: str
) -> None:
    fixes = trace(_route_points(roads, 10), now_s() - 30)
    app = _connect(ingest, driver_id)
    app.hello()
    assert app.send_and_wait(batch(1, fixes[:5])).ack.seq == 1

    assert ingest.gateway.pid is not None
    os.killpg(ingest.gateway.pid, signal.SIGTERM)  # a graceful stop, as Kubernetes does
    with pytest.raises(grpc.RpcError) as ended:
        while True:
            app.recv()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (ended.value.details() or "")
    app.close()
    gateway = ingest.gateway
    wait_until(lambda: not gateway.running, timeout=30, what="the gateway to exit")
    assert gateway.returncode == 0, gateway.log_tail()
    ingest.restart_gateway()

    again = _connect(ingest, driver_id)
    assert again.hello().last_acked_seq == 1
    assert again.send_and_wait(batch(2, fixes[5:])).ack.seq == 2
    again.close()
    assert len(_wait_history(ingest, driver_id, len(fixes))) == len(fixes)


def test_the_token_decides_the_driver(ingest: Ingest, driver_id: str) -> None:
    app = _connect(ingest, driver_id)
    assert app.hello().driver_id == driver_id
    assert app.send_and_wait(batch(1, [fix(VALLETTA, now_s() - 1)])).ack.seq == 1
    app.close()
    rows = _wait_history(ingest, driver_id, 1)
    assert {r["driver_id"] for r in rows} == {driver_id}

    dispatcher = DriverApp(
        ingest.gateway_address, token(ingest.settings, driver_id, Role.DISPATCHER)
    )
    with pytest.raises(grpc.RpcError) as caught:
        dispatcher.hello()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "bearer",
    [None, "not-a-jwt", "signed-with-another-secret"],
)
def test_missing_or_invalid_token_is_unauthenticated(ingest: Ingest, bearer: str | None) -> None:
    if bearer == "signed-with-another-secret":
        bearer = token(ingest.settings.replace(token_secret="another"), "drv-x")
    app = DriverApp(ingest.gateway_address, bearer)
    with pytest.raises(grpc.RpcError) as caught:
        app.hello()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    app.close()


def _bad_inputs() -> list[tuple[str, Request, int, str]]:
    now = now_s()
    good = fix(VALLETTA, now - 5)
    nan = fix(VALLETTA, now - 5)
    nan.position.lat = float("nan")
    far_lng = fix(VALLETTA, now - 5)
    far_lng.position.lng = 181.0
    return [
        ("nan latitude", batch(1, [good, nan]), 3, "fixes[1].position.lat"),
        ("longitude out of range", batch(1, [far_lng]), 3, "fixes[0].position.lng"),
        ("negative accuracy", batch(1, [fix(VALLETTA, now - 5, accuracy=-1)]), 3, "accuracy_m"),
        ("absurd accuracy", batch(1, [fix(VALLETTA, now - 5, accuracy=1e6)]), 3, "accuracy_m"),
        ("absurd speed", batch(1, [fix(VALLETTA, now - 5, speed=250)]), 3, "fixes[0].speed_mps"),
        ("future", batch(1, [fix(VALLETTA, now + 3600)]), 3, "in the future"),
        ("too old", batch(1, [fix(VALLETTA, now - 3 * 86400)]), 3, "s old"),
        ("empty batch", batch(1, []), 3, "empty"),
        ("oversized batch", batch(1, [fix(VALLETTA, now - 5)] * 101), 3, "at most 100"),
        (
            "fixes out of order",
            batch(1, [fix(VALLETTA, now - 1), fix(VALLETTA, now - 9)]),
            3,
            "earlier",
        ),
        ("seq zero", batch(0, [good]), 9, "seq must be at least 1"),
        ("empty event", Request(seq=1), 3, "event is empty"),
        ("second hello", Request(seq=1, hello=driver_pb2.Hello()), 9, "Hello"),
    ]


def test_every_bad_input_gets_its_reject_and_the_stream_goes_on(
    ingest: Ingest, driver_id: str
) -> None:
    app = _connect(ingest, driver_id)
    app.hello()
    seq = 0
    for name, request, code, text in _bad_inputs():
        seq += 1
        if request.seq != 0:
            request.seq = seq
        response = app.send_and_wait(request)
        assert response.WhichOneof("command") == "reject", name
        assert response.reject.code == code, name
        assert text in response.reject.message, (name, response.reject.message)
        good = app.send_and_wait(batch(seq + 1, [fix(VALLETTA, now_s() - 200 + seq)]))
        assert good.WhichOneof("command") == "ack" and good.ack.seq == seq + 1, name
        seq += 1
    backwards = app.send_and_wait(batch(3, [fix(VALLETTA, now_s() - 1)]))
    assert backwards.reject.code == 9 and "backwards" in backwards.reject.message
    app.close()
    rows = _wait_history(ingest, driver_id, len(_bad_inputs()))
    assert len(rows) == len(_bad_inputs())


def test_commands_and_tracking_mode_reach_the_stream(ingest: Ingest, driver_id: str) -> None:
    app = _connect(ingest, driver_id)
    app.hello()
    client = redis.Redis.from_url(ingest.settings.redis_url)
    offer = driver_service_pb2.ConnectResponse(offer=driver_pb2.Offer(offer_id="offer-1"))
    wait_until(
        lambda: client.publish(
            topics.driver_commands_channel(driver_id), offer.SerializeToString()
        ),
        timeout=5,
        what="a subscriber on the driver's channel",
    )
    assert app.recv().offer.offer_id == "offer-1"
    status = Request(
        seq=1, status=driver_pb2.StatusChange(status=common_pb2.DRIVER_STATUS_DELIVERING)
    )
    assert app.send_and_wait(status).ack.seq == 1
    config = app.recv()
    assert config.tracking_config.mode == driver_pb2.TRACKING_MODE_ACTIVE
    assert config.tracking_config.upload_interval.ToTimedelta() == dt.timedelta(
        seconds=ingest.settings.active_upload_interval_s
    )
    app.close()
    # The mode survives a reconnect: Welcome carries it.
    again = _connect(ingest, driver_id)
    assert again.hello().tracking_config.mode == driver_pb2.TRACKING_MODE_ACTIVE
    again.close()
    client.close()


def _seconds(duration: Any) -> float:
    return float(duration.ToTimedelta().total_seconds())


def _intervals(**seconds: float) -> tracking_pb2.TrackingIntervals:
    message = tracking_pb2.TrackingIntervals()
    for name, value in seconds.items():
        getattr(message, f"{name}_interval").FromTimedelta(dt.timedelta(seconds=value))
    return message


def test_tracking_intervals_change_at_run_time(ingest: Ingest, driver_id: str) -> None:
    """A tenant's new intervals reach its connected app at once, in the app's mode, and every
    later config (mode switch, Welcome); another tenant keeps the defaults."""
    settings = ingest.settings
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    app = DriverApp(ingest.gateway_address, token(settings, driver_id, tenant_id=tenant))
    welcome = app.hello()
    assert _seconds(welcome.tracking_config.capture_interval) == settings.passive_capture_interval_s
    channel = grpc.insecure_channel(ingest.tracking_address)
    fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
    md = (("authorization", f"Bearer {token(settings, 'ops-1', Role.DISPATCHER, tenant)}"),)
    before = fleet.GetTrackingIntervals(
        fleet_service_pb2.GetTrackingIntervalsRequest(), metadata=md
    )
    assert not before.intervals.HasField("update_time")
    assert _seconds(before.intervals.active_upload_interval) == settings.active_upload_interval_s

    wanted = _intervals(active_capture=2, active_upload=10, passive_capture=60, passive_upload=300)
    updated = fleet.UpdateTrackingIntervals(
        fleet_service_pb2.UpdateTrackingIntervalsRequest(intervals=wanted), metadata=md
    )
    assert updated.intervals.HasField("update_time")
    assert _seconds(updated.intervals.passive_upload_interval) == 300
    pushed = app.recv().tracking_config  # the app is idle: the passive pair
    assert pushed.mode == driver_pb2.TRACKING_MODE_PASSIVE
    assert (_seconds(pushed.capture_interval), _seconds(pushed.upload_interval)) == (60, 300)
    assert pushed.max_batch_size == settings.ingest_max_batch_size

    status = Request(
        seq=1, status=driver_pb2.StatusChange(status=common_pb2.DRIVER_STATUS_DELIVERING)
    )
    assert app.send_and_wait(status).ack.seq == 1
    active = app.recv().tracking_config
    assert active.mode == driver_pb2.TRACKING_MODE_ACTIVE
    assert (_seconds(active.capture_interval), _seconds(active.upload_interval)) == (2, 10)
    app.close()
    again = DriverApp(ingest.gateway_address, token(settings, driver_id, tenant_id=tenant))
    config = again.hello().tracking_config
    assert config.mode == driver_pb2.TRACKING_MODE_ACTIVE
    assert (_seconds(config.capture_interval), _seconds(config.upload_interval)) == (2, 10)

    # Another tenant's drivers and reads are untouched.
    other = _connect(ingest, f"drv-{uuid.uuid4().hex[:10]}")
    default = other.hello().tracking_config
    assert _seconds(default.upload_interval) == settings.passive_upload_interval_s
    other.close()

    # Unset intervals take the defaults again: an empty update resets all four.
    reset_view = fleet.UpdateTrackingIntervals(
        fleet_service_pb2.UpdateTrackingIntervalsRequest(), metadata=md
    )
    assert not reset_view.intervals.HasField("update_time")
    reset = again.recv().tracking_config
    assert reset.mode == driver_pb2.TRACKING_MODE_ACTIVE
    assert _seconds(reset.upload_interval) == settings.active_upload_interval_s
    again.close()
    channel.close()


@pytest.mark.parametrize(
    ("intervals", "named"),
    [
        (_intervals(active_capture=0.5), "active_capture_interval"),
        (_intervals(passive_capture=7200, passive_upload=7200), "passive_capture_interval"),
        (_intervals(passive_capture=60, passive_upload=30), "passive_upload_interval"),
        (_intervals(active_capture=1, active_upload=500), "the gateway takes at most"),
        (_intervals(active_upload=3601), "active_upload_interval"),
    ],
)
def test_bad_tracking_intervals_are_refused_and_change_nothing(
    ingest: Ingest, intervals: tracking_pb2.TrackingIntervals, named: str
) -> None:
    settings = ingest.settings
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    md = (("authorization", f"Bearer {token(settings, 'ops-1', Role.DISPATCHER, tenant)}"),)
    good = _intervals(passive_capture=45)
    with grpc.insecure_channel(ingest.tracking_address) as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        fleet.UpdateTrackingIntervals(
            fleet_service_pb2.UpdateTrackingIntervalsRequest(intervals=good), metadata=md
        )
        with pytest.raises(grpc.RpcError) as caught:
            fleet.UpdateTrackingIntervals(
                fleet_service_pb2.UpdateTrackingIntervalsRequest(intervals=intervals), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in str(caught.value.details())
        kept = fleet.GetTrackingIntervals(
            fleet_service_pb2.GetTrackingIntervalsRequest(), metadata=md
        )
    assert _seconds(kept.intervals.passive_capture_interval) == 45


def test_a_negative_interval_is_refused(ingest: Ingest) -> None:
    negative = tracking_pb2.TrackingIntervals()
    negative.active_capture_interval.seconds = -5
    channel, fleet, md = _fleet(ingest)
    with channel, pytest.raises(grpc.RpcError) as caught:
        fleet.UpdateTrackingIntervals(
            fleet_service_pb2.UpdateTrackingIntervalsRequest(intervals=negative), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "intervals.active_capture_interval must be a positive duration" in str(
        caught.value.details()
    )


def test_path_longer_than_a_day_is_invalid(ingest: Ingest, driver_id: str) -> None:
    channel, fleet, md = _fleet(ingest)
    with channel, pytest.raises(grpc.RpcError) as caught:
        fleet.GetDriverPath(
            fleet_service_pb2.GetDriverPathRequest(
                driver_id=driver_id, start=_stamp(now_s() - 2 * 86400), end=_stamp(now_s())
            ),
            metadata=md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
