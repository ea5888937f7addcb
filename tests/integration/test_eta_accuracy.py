"""FleetService.GetEtaAccuracy on the running platform: the error of recorded ETA predictions
against the deliveries of a time range, overall and by horizon band, for the caller's tenant
only, and its bad inputs; and the same errors scored in the ``lastmile_eta_error_seconds``
metric once per delivery however many tracking processes follow the order events.

Orders are created through dispatch in tenants of their own; the predictions and arrivals the
tracking processes would record are written with known values, days in the past, so that the
expected errors are exact and no other test's deliveries fall in the range (the drive test of
test_tracking_customer.py asks the same RPC about the predictions the pipeline recorded).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc
from prometheus_client import REGISTRY

from core.auth import Principal, Role, issue_token, set_current_principal
from core.bus import Bus
from core.db import Database
from core.errors import ResourceExhausted
from core.geo import LatLng
from tests.helpers import async_wait_until, east_of
from tests.integration.conftest import Platform
from tests.integration.customer_support import (
    create_driver_and_order,
    dispatch_sets_status,
    record_arrival,
    record_fixes,
    record_prediction,
    sql,
)
from tracking.active_orders import ActiveOrders
from tracking.eta_accuracy import EtaAccuracyReport
from tracking.order_follow import OrderFollower

pytestmark = pytest.mark.integration
DELIVERED, NEARBY = common_pb2.ORDER_STATUS_DELIVERED, common_pb2.ORDER_STATUS_NEARBY
# The delivery time of the seeded orders: far enough back that no live test delivers then.
T = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
VALLETTA = LatLng(35.8960, 14.5110)
SLIEMA = LatLng(35.9126, 14.5045)


def _metadata(
    platform: Platform, tenant: str, role: Role = Role.DISPATCHER
) -> tuple[tuple[str, str], ...]:
    bearer = issue_token(platform.settings, f"staff-{tenant}", role, tenant)
    return (("authorization", f"Bearer {bearer}"),)


def _stamp(at: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _request(
    start: dt.datetime, end: dt.datetime, driver_id: str = ""
) -> fleet_service_pb2.GetEtaAccuracyRequest:
    return fleet_service_pb2.GetEtaAccuracyRequest(
        start=_stamp(start), end=_stamp(end), driver_id=driver_id
    )


def _ask(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    tenant: str,
    driver_id: str = "",
    hours: tuple[int, int] = (-1, 1),
) -> fleet_service_pb2.GetEtaAccuracyResponse:
    """The report of ``tenant``'s dispatcher for T + hours[0] to T + hours[1]."""
    start, end = (T + dt.timedelta(hours=h) for h in hours)
    return fleet.GetEtaAccuracy(
        _request(start, end, driver_id), metadata=_metadata(platform, tenant), timeout=30
    )


@pytest.fixture(scope="module")
def fleet(platform: Platform) -> Iterator[fleet_service_pb2_grpc.FleetServiceStub]:
    with grpc.insecure_channel(platform.addresses["tracking"]) as channel:
        yield fleet_service_pb2_grpc.FleetServiceStub(channel)


def _order(platform: Platform, tenant: str, driver: str) -> str:
    order_id, _ = create_driver_and_order(
        platform.settings,
        platform.addresses["dispatch"],
        driver,
        VALLETTA,
        SLIEMA,
        metadata=_metadata(platform, tenant),
    )
    return order_id


def _predict(
    platform: Platform, order_id: str, driver: str, before_s: float, error_s: float
) -> None:
    """A prediction made ``before_s`` before the delivery at T that was ``error_s`` early."""
    record_prediction(platform.settings.database_url, order_id, driver, T, before_s, error_s)


def _arrive(platform: Platform, order_id: str, status: int, at: dt.datetime) -> None:
    record_arrival(platform.settings.database_url, order_id, status, at)


@pytest.fixture(scope="module")
def seeded(platform: Platform) -> tuple[str, str, str]:
    """Two delivered orders of one tenant (drivers A and B), one of another tenant, one
    delivered outside the range: (tenant, driver A, driver B)."""
    tag = uuid.uuid4().hex[:8]
    tenant, other = f"tenant-eta-{tag}", f"tenant-eta-other-{tag}"
    driver_a, driver_b = f"drv-eta-a-{tag}", f"drv-eta-b-{tag}"
    order_a = _order(platform, tenant, driver_a)
    order_b = _order(platform, tenant, driver_b)
    order_old = _order(platform, tenant, driver_a)
    order_other = _order(platform, other, f"drv-eta-o-{tag}")
    for order in (order_a, order_b, order_other):
        _arrive(platform, order, NEARBY, T - dt.timedelta(minutes=1))
        _arrive(platform, order, DELIVERED, T)
    _arrive(platform, order_old, DELIVERED, T - dt.timedelta(days=2))
    _predict(platform, order_a, driver_a, before_s=100, error_s=30)  # band [0, 300)
    _predict(platform, order_a, driver_a, before_s=600, error_s=-60)  # band [300, 900)
    _predict(platform, order_a, driver_a, before_s=2000, error_s=200)  # band [1800, 3600)
    _predict(platform, order_a, driver_a, before_s=-10, error_s=0)  # after the delivery
    _predict(platform, order_b, driver_b, before_s=200, error_s=10)  # band [0, 300)
    _predict(platform, order_other, "drv-other", before_s=100, error_s=500)
    _predict(platform, order_old, driver_a, before_s=100, error_s=500)
    return tenant, driver_a, driver_b


def test_errors_of_the_tenants_deliveries_overall_and_by_horizon(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    seeded: tuple[str, str, str],
) -> None:
    tenant, _, _ = seeded
    report = _ask(platform, fleet, tenant)

    # Errors 30, -60, 200 (order A) and 10 (order B), in seconds.
    overall = report.overall
    assert (overall.predictions, overall.deliveries) == (4, 2)
    assert overall.mean_error_s == pytest.approx(45.0)
    assert overall.median_absolute_error_s == pytest.approx(45.0)
    assert overall.p90_absolute_error_s == pytest.approx(158.0)  # 60 + 0.7 * (200 - 60)
    assert overall.within_tolerance_ratio == pytest.approx(0.75)  # 200 s is over 120 s
    assert report.tolerance_s == platform.settings.eta_accuracy_tolerance_s
    bands = [(b.horizon_from_s, b.horizon_to_s, b.predictions) for b in report.bands]
    assert bands == [
        (0, 300, 2),
        (300, 900, 1),
        (900, 1800, 0),
        (1800, 3600, 1),
        (3600, 0, 0),
    ]
    nearest = report.bands[0]
    assert nearest.deliveries == 2
    assert nearest.mean_error_s == pytest.approx(20.0)
    assert nearest.within_tolerance_ratio == 1.0
    assert report.bands[1].mean_error_s == pytest.approx(-60.0)
    assert report.bands[1].median_absolute_error_s == pytest.approx(60.0)
    assert report.bands[3].within_tolerance_ratio == 0.0


def test_one_drivers_predictions_and_an_empty_range(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    seeded: tuple[str, str, str],
) -> None:
    tenant, _, driver_b = seeded

    only_b = _ask(platform, fleet, tenant, driver_b)
    empty = _ask(platform, fleet, tenant, hours=(1, 2))

    assert only_b.overall.predictions == 1
    assert only_b.overall.mean_error_s == pytest.approx(10.0)
    assert empty.overall.predictions == 0 and empty.overall.mean_error_s == 0.0
    assert len(empty.bands) == 5 and all(b.predictions == 0 for b in empty.bands)


def test_another_tenant_sees_none_of_it(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    seeded: tuple[str, str, str],
) -> None:
    tenant, driver_a, _ = seeded

    report = _ask(platform, fleet, f"not-{tenant}", driver_a)

    assert report.overall.predictions == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (fleet_service_pb2.GetEtaAccuracyRequest(), "start and end are required"),
        (_request(T, T - dt.timedelta(seconds=1)), "end must be after start"),
        (_request(T - dt.timedelta(days=93), T), "at most 92 days"),
    ],
)
def test_a_bad_range_is_invalid_argument(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    request_: fleet_service_pb2.GetEtaAccuracyRequest,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        fleet.GetEtaAccuracy(request_, metadata=_metadata(platform, "tenant-test"), timeout=30)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("role", "code"),
    [(None, grpc.StatusCode.UNAUTHENTICATED), (Role.DRIVER, grpc.StatusCode.PERMISSION_DENIED)],
)
def test_only_dispatchers_and_services_may_ask(
    platform: Platform,
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    role: Role | None,
    code: grpc.StatusCode,
) -> None:
    metadata = () if role is None else _metadata(platform, "tenant-test", role)

    with pytest.raises(grpc.RpcError) as refused:
        fleet.GetEtaAccuracy(_request(T - dt.timedelta(hours=1), T), metadata=metadata, timeout=30)

    assert refused.value.code() == code


def _error_sample(horizon: str, le: str = "+Inf") -> float:
    """Observations of ``lastmile_eta_error_seconds`` in a band up to a bucket's bound."""
    labels = {"horizon": horizon, "le": le}
    return REGISTRY.get_sample_value("lastmile_eta_error_seconds_bucket", labels) or 0.0


def test_a_recorded_delivery_scores_its_etas_in_the_metric_once(platform: Platform) -> None:
    """Two order followers (two tracking processes) read the same DELIVERED event: the one
    whose insert records it observes its ETAs' errors; the other observes nothing."""
    tenant = f"tenant-eta-score-{uuid.uuid4().hex[:8]}"
    driver = f"drv-eta-s-{uuid.uuid4().hex[:8]}"
    order_id = _order(platform, tenant, driver)
    _predict(platform, order_id, driver, before_s=100, error_s=30)  # 30 s early, band 0-300s
    _predict(platform, order_id, driver, before_s=1000, error_s=-200)  # band 900-1800s
    event = dispatch_pb2.OrderEvent(
        order_id=order_id,
        from_status=common_pb2.ORDER_STATUS_NEARBY,
        to_status=DELIVERED,
        at=_stamp(T),
    )
    # (band, bucket bound): the 30-s error is at most 60 but not 0, the -200-s one at most
    # -120 but not -300.
    bounds = [
        ("0-300s", "+Inf"),
        ("0-300s", "60.0"),
        ("0-300s", "0.0"),
        ("900-1800s", "+Inf"),
        ("900-1800s", "-120.0"),
        ("900-1800s", "-300.0"),
        ("300-900s", "+Inf"),
    ]
    before = [_error_sample(*bound) for bound in bounds]

    async def two_processes_follow() -> None:
        bus, database = Bus(platform.settings), Database(platform.settings)
        await bus.start()
        await database.start()
        try:
            for _ in range(2):
                active = ActiveOrders(platform.settings, bus, database)
                await OrderFollower(platform.settings, bus, database, active).handle([event])
        finally:
            await database.stop()
            await bus.stop()

    asyncio.run(two_processes_follow())

    grown = [_error_sample(*bound) - was for bound, was in zip(bounds, before, strict=True)]
    assert grown == [1, 1, 0, 1, 1, 0, 0]


def test_the_actual_arrival_is_when_the_driver_reached_the_drop_off(
    platform: Platform, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """The driver drove past the drop-off before the pickup, came back 6 minutes before the
    hand-over and drove off before confirming it: ETAs are measured against that return, and
    one shown after it is not counted. Another driver never came near the pin: its delivery
    time stands."""
    tag = uuid.uuid4().hex[:8]
    tenant = f"tenant-eta-reach-{tag}"
    came_back, away = f"drv-eta-r-{tag}", f"drv-eta-w-{tag}"
    order_id, other_id = _order(platform, tenant, came_back), _order(platform, tenant, away)
    dsn = platform.settings.database_url
    dispatch_sets_status(dsn, order_id, common_pb2.ORDER_STATUS_ASSIGNED, came_back)
    dispatch_sets_status(dsn, other_id, common_pb2.ORDER_STATUS_ASSIGNED, away)
    minute = dt.timedelta(minutes=1)
    _log_event(platform, order_id, common_pb2.ORDER_STATUS_PICKED_UP, T - 11 * minute)
    near = east_of(SLIEMA, 30)  # inside the 75-m radius
    outside = east_of(SLIEMA, 150)
    record_fixes(
        dsn,
        came_back,
        [
            (T - 20 * minute, VALLETTA),
            (T - 12 * minute, SLIEMA),  # on the way to the pickup
            (T - 10 * minute, outside),
            (T - 6 * minute, near),  # the arrival
            (T - 5 * minute, SLIEMA),
            (T - minute, outside),  # confirmed from the car
        ],
    )
    record_fixes(dsn, away, [(T - 6 * minute, outside), (T - minute, outside)])
    # Shown 15 min before the hand-over for 5 min before it: 1 min late against the arrival.
    _predict(platform, order_id, came_back, before_s=900, error_s=300)
    _predict(platform, order_id, came_back, before_s=180, error_s=0)  # after the arrival
    _predict(platform, other_id, away, before_s=600, error_s=300)
    delivered = [
        dispatch_pb2.OrderEvent(
            order_id=order, from_status=NEARBY, to_status=DELIVERED, at=_stamp(T)
        )
        for order in (order_id, other_id)
    ]
    before = _error_sample("300-900s")

    async def follow() -> None:
        bus, database = Bus(platform.settings), Database(platform.settings)
        await bus.start()
        await database.start()
        try:
            active = ActiveOrders(platform.settings, bus, database)
            await OrderFollower(platform.settings, bus, database, active).handle(delivered)
        finally:
            await database.stop()
            await bus.stop()

    asyncio.run(follow())

    reached = sql(
        dsn,
        "SELECT order_id, reached_at FROM eta_arrivals WHERE order_id = ANY($1)",
        [order_id, other_id],
    )
    assert {r["order_id"]: r["reached_at"] for r in reached} == {
        order_id: T - 6 * minute,
        other_id: None,
    }
    mine = _ask(platform, fleet, tenant, came_back)
    assert (mine.overall.predictions, mine.overall.deliveries, mine.deliveries_reached) == (1, 1, 1)
    assert mine.overall.mean_error_s == pytest.approx(-60.0)
    theirs = _ask(platform, fleet, tenant, away)
    assert theirs.deliveries_reached == 0 and theirs.overall.mean_error_s == pytest.approx(300.0)
    report = _ask(platform, fleet, tenant)
    assert (report.overall.deliveries, report.deliveries_reached) == (2, 1)
    assert [b.predictions for b in report.bands] == [0, 2, 0, 0, 0]  # 540 s and 600 s ahead
    assert _error_sample("300-900s") - before == 2
    view = sql(dsn, "SELECT error_s FROM eta_errors WHERE order_id = $1", order_id)
    assert [float(r["error_s"]) for r in view] == [-60.0]


def _log_event(platform: Platform, order_id: str, to_status: int, at: dt.datetime) -> None:
    """A status change in the order's log, as dispatch writes it, that never reached the
    stream (as if every tracking process had been down when it was relayed)."""
    sql(
        platform.settings.database_url,
        "INSERT INTO order_events (order_id, sequence, event_type, from_status, to_status,"
        " actor, at) SELECT $1, max(sequence) + 1, 'status', 0, $2, 'test', $3"
        " FROM order_events WHERE order_id = $1",
        order_id,
        to_status,
        at,
    )


def test_arrivals_missed_while_tracking_was_down_are_caught_up_and_scored_once(
    platform: Platform,
) -> None:
    """Starting order followers record the arrivals of the order log's last
    ``eta_arrivals_catch_up_s`` that no process recorded (the first NEARBY, the DELIVERED),
    not older ones; the delivery's ETAs are scored once however many start."""
    tag = uuid.uuid4().hex[:8]
    tenant, driver = f"tenant-eta-catch-{tag}", f"drv-eta-c-{tag}"
    recent, old = _order(platform, tenant, driver), _order(platform, tenant, driver)
    delivered = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    _log_event(platform, recent, NEARBY, delivered - dt.timedelta(minutes=3))
    _log_event(platform, recent, NEARBY, delivered - dt.timedelta(minutes=2))
    _log_event(platform, recent, DELIVERED, delivered)
    _log_event(platform, old, DELIVERED, delivered - dt.timedelta(days=2))
    record_prediction(
        platform.settings.database_url, recent, driver, delivered, before_s=100, error_s=30
    )
    settings = platform.settings.replace(eta_arrivals_catch_up_s=86400.0)
    before = _error_sample("0-300s")

    async def two_processes_start() -> None:
        bus, database = Bus(settings), Database(settings)
        await bus.start()
        await database.start()
        followers = [
            OrderFollower(settings, bus, database, ActiveOrders(settings, bus, database))
            for _ in range(2)
        ]
        try:
            for follower in followers:
                await follower.start()

            async def recorded() -> bool:
                async with database.pool.acquire() as conn:
                    count = await conn.fetchval(
                        "SELECT count(*) FROM eta_arrivals WHERE order_id = $1", recent
                    )
                return int(count) == 2

            await async_wait_until(recorded, within=10, what="the missed arrivals recorded")
            # Both have caught up (the second found nothing left to record).
            assert [await f.catch_up() for f in followers] == [0, 0]
        finally:
            for follower in followers:
                await follower.stop()
            await database.stop()
            await bus.stop()

    asyncio.run(two_processes_start())

    rows = sql(
        platform.settings.database_url,
        "SELECT order_id, status, arrived_at FROM eta_arrivals WHERE order_id = ANY($1)"
        " ORDER BY status",
        [recent, old],
    )
    assert [(r["order_id"], r["status"], r["arrived_at"]) for r in rows] == [
        (recent, NEARBY, delivered - dt.timedelta(minutes=3)),
        (recent, DELIVERED, delivered),
    ]
    assert _error_sample("0-300s") - before == 1


def test_a_report_over_its_time_is_stopped_and_refused(platform: Platform) -> None:
    """A report that queries longer than ``eta_accuracy_timeout_s`` (here: held up by a lock)
    is RESOURCE_EXHAUSTED with advice, and PostgreSQL stops running it."""
    settings = platform.settings.replace(eta_accuracy_timeout_s=0.5)

    async def held_up() -> None:
        database = Database(settings)
        await database.start()
        blocker = await asyncpg.connect(settings.database_url)
        report = EtaAccuracyReport(settings, database)
        set_current_principal(Principal("staff-eta", Role.DISPATCHER, "tenant-test"))
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE eta_predictions IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(ResourceExhausted, match="shorter time range or one driver"):
                    async with asyncio.timeout(10):  # refused long before, or this fails
                        await report.get(_request(T - dt.timedelta(hours=1), T))

                async def cancelled() -> bool:
                    # Still locked: a query not cancelled would still be waiting here.
                    running = await blocker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE '%WITH delivered AS%' AND pid <> pg_backend_pid()"
                    )
                    return int(running) == 0

                await async_wait_until(cancelled, within=10, what="the report's query to stop")
        finally:
            await blocker.close()
            await database.stop()

    asyncio.run(held_up())
