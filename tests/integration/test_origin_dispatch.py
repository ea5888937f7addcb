"""Dispatch and origins' decisions end to end (real dispatch process, PostgreSQL, Redis, road
graph; slot 8, after test_origins.py): an order is dispatched only once its origin accepted
it, no pickup is planned before its ready time (instant offers and wave routes), and the
origin sees the driver and its ETA once assigned."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dps
from lastmile.driver.v1 import driver_pb2

from ops.servers import PostgresServer, RedisServer
from tests.helpers import wait_until
from tests.integration.orders_support import (
    SLIEMA,
    Client,
    ConnectRequest,
    Dispatch,
    code_of,
    driver_event,
    isolated_dispatch,
    new_tenant,
    order,
    own_redis_db,
    put_live_state,
    register_driver,
    sql,
    window,
)
from tests.integration.origin_support import (
    Watch,
    accept,
    add_origin,
    change_of,
    minutes,
    origin_client,
    seconds_from_now,
)

pytestmark = pytest.mark.integration
NEAR = (35.8975, 14.5125)  # a few hundred metres from the Valletta kitchen


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int, road_graph: Path
) -> Iterator[Dispatch]:
    with isolated_dispatch(
        postgres_server,
        redis_server.url,
        redis_db,
        graph_dir=road_graph.parent,
        instant_enabled=True,
        instant_batch_interval_s=0.3,
        instant_max_candidates=500,
        origin_answer_timeout_s=900.0,
    ) as service:
        yield service


@pytest.fixture
def staff(dispatch: Dispatch) -> Iterator[Client]:
    c = Client(dispatch, new_tenant())
    yield c
    c.close()


@pytest.fixture(scope="module")
def r(redis_server: RedisServer, redis_db: int) -> redis.Redis:
    return redis.Redis.from_url(own_redis_db(redis_server.url, redis_db))


def idle_driver(staff: Client, r: redis.Redis, where: tuple[float, float]) -> str:
    """A registered driver, idle at ``where`` in the live state (as tracking writes it)."""
    driver_id = register_driver(staff, "Maria")
    put_live_state(r, driver_id, where)
    return driver_id


def instant_order(staff: Client, origin_id: str) -> str:
    message = order(drop_off=SLIEMA, kind=dispatch_pb2.ORDER_KIND_INSTANT, origin_id=origin_id)
    return str(staff.create(message=message).order.order_id)


def test_instant_offers_wait_for_acceptance_and_never_pick_up_before_ready(
    staff: Client, dispatch: Dispatch, r: redis.Redis
) -> None:
    origin_id = add_origin(staff)
    kitchen = origin_client(dispatch, staff.tenant, origin_id)
    watch = Watch(kitchen)
    waiting = instant_order(staff, origin_id)  # its origin never answers here
    cooking = instant_order(staff, origin_id)
    first, second = idle_driver(staff, r, NEAR), idle_driver(staff, r, NEAR)
    accepted = accept(kitchen, cooking, minutes(20))

    wait_until(
        lambda: staff.get(cooking).status == common_pb2.ORDER_STATUS_OFFERED, 20, what="offer"
    )
    offer = next(e for e in staff.events(cooking) if e.event_type == "offered")
    details = json.loads(offer.details_json)
    ready_in = accepted.ready_at.ToDatetime(tzinfo=dt.UTC) - offer.at.ToDatetime(tzinfo=dt.UTC)
    # The driver is minutes away but the food needs 20: pickup planned at the ready time.
    assert details["arrival_s"][cooking] < 600
    assert details["pickup_at_s"][cooking] >= ready_in.total_seconds() - 1
    assert details["wait_s"] > 0

    driver_id = staff.get(cooking).driver_id
    assert driver_id in (first, second)
    answer = driver_pb2.OfferAnswer(offer_id=details["offer_id"], accepted=True)
    driver_event(r, driver_id, 1, ConnectRequest(seq=1, offer_answer=answer))
    assigned = watch.until(change_of(cooking, "offer_accepted"))
    assert assigned.driver_name == "Maria"
    expected_eta = offer.at.ToDatetime(tzinfo=dt.UTC) + dt.timedelta(
        seconds=details["arrival_s"][cooking]
    )
    assert abs((assigned.driver_eta.ToDatetime(tzinfo=dt.UTC) - expected_eta).total_seconds()) < 1
    watch.close()
    # Two free drivers and rounds every 0.3 s since before the offer: had the unanswered
    # order been dispatchable, it would have been offered with (or before) the other one.
    assert staff.get(waiting).status == common_pb2.ORDER_STATUS_PENDING
    assert [e.event_type for e in staff.events(waiting)] == ["created"]


def test_waves_plan_pickups_from_the_ready_time(staff: Client, dispatch: Dispatch) -> None:
    origin_id = add_origin(staff)
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    driver = dispatch_pb2.Driver(driver_id=driver_id, name="Wave", capacity_units=10, active=True)
    driver.depot.lat, driver.depot.lng = NEAR
    driver.shift.CopyFrom(window(-600, 8 * 3600))
    staff.admin.UpsertDriver(dps.UpsertDriverRequest(driver=driver), metadata=staff.md)
    message = order(drop_off=SLIEMA, drop_window=window(0, 4 * 3600), origin_id=origin_id)
    order_id = staff.create(message=message).order.order_id

    def plan(order_ids: list[str]) -> dps.PlanWaveResponse:
        request = dps.PlanWaveRequest(
            driver_ids=[driver_id], order_ids=order_ids, time_limit=Duration(seconds=1)
        )
        return staff.admin.PlanWave(request, metadata=staff.md)

    # Not accepted yet: named, it is refused; unnamed, it is left for a later wave.
    assert code_of(lambda: plan([order_id])) == grpc.StatusCode.FAILED_PRECONDITION
    assert not plan([]).routes

    ready_at = accept(staff, order_id, minutes(40)).ready_at
    assert 2380 < seconds_from_now(ready_at) <= 2400
    [route] = plan([order_id]).routes
    pickup = next(s for s in route.stops if s.kind == route_pb2.STOP_KIND_PICKUP)
    # The depot is minutes away; the pickup waits for the food.
    assert pickup.planned_arrival.ToDatetime() >= ready_at.ToDatetime()
    [stored] = sql(
        dispatch.settings.database_url,
        "SELECT window_start FROM route_stops WHERE order_id = $1 AND kind = $2",
        order_id,
        route_pb2.STOP_KIND_PICKUP,
    )
    assert stored["window_start"] == ready_at.ToDatetime(tzinfo=dt.UTC)
    assert staff.get(order_id).status == common_pb2.ORDER_STATUS_ASSIGNED
