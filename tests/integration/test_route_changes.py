"""Route versions from changes outside waves, on a dispatch process of its own with the instant
matcher on: an accepted offer puts the order on the driver's route (a new route, then a new
version of it), a rescheduled order leaves it, a picked-up order's pickup shows as completed,
a refused one goes back to its origin as a RETURN stop. RouteUpdates are read on the driver's command
channel; live positions are written in the documented live-state shape, as tracking does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dps
from lastmile.dispatch.v1 import order_service_pb2 as ops
from lastmile.driver.v1 import driver_pb2

from core import route_plans, topics
from core.geo import LatLng, haversine_m
from ops.servers import PostgresServer, RedisServer
from tests.helpers import wait_until
from tests.integration.orders_support import (
    SLIEMA,
    VALLETTA,
    Client,
    ConnectRequest,
    Dispatch,
    command_of_kind,
    driver_event,
    isolated_dispatch,
    new_tenant,
    order,
    own_redis_db,
    put_live_state,
    register_driver,
    subscribe,
    window,
)

pytestmark = pytest.mark.integration
NEAR = (35.8975, 14.5125)  # a few hundred metres from the Valletta pickups
MSIDA = (35.8970, 14.4890)


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
        instant_sweep_interval_s=0.2,
        instant_max_driver_load=3,
    ) as service:
        yield service


@pytest.fixture
def client(dispatch: Dispatch) -> Iterator[Client]:
    c = Client(dispatch, new_tenant())
    yield c
    c.close()


@pytest.fixture(scope="module")
def r(redis_server: RedisServer, redis_db: int) -> redis.Redis:
    return redis.Redis.from_url(own_redis_db(redis_server.url, redis_db))


class Driver:
    """A registered driver at NEAR, idle, with its command channel subscribed."""

    def __init__(self, client: Client, r: redis.Redis, url: str) -> None:
        self.driver_id = register_driver(client, "guided")
        self.r = r
        self.seq = 0
        self.commands = subscribe(url, topics.driver_commands_channel(self.driver_id))
        put_live_state(r, self.driver_id, NEAR)

    def command(self, kind: str) -> Any:
        """The next command of ``kind`` on the channel (others are skipped)."""
        return command_of_kind(self.commands, kind, self.driver_id)

    def event(self, **fields: Any) -> None:
        """Append one driver event with the next seq, as the gateway does."""
        self.seq += 1
        driver_event(self.r, self.driver_id, self.seq, ConnectRequest(seq=self.seq, **fields))

    def accept_next_offer(self) -> list[str]:
        """Accept the next offer; its order ids."""
        offer = self.command("offer")
        self.event(offer_answer=driver_pb2.OfferAnswer(offer_id=offer.offer_id, accepted=True))
        return [o.order_id for o in offer.orders]


def instant(client: Client, drop_off: tuple[float, float]) -> str:
    message = order(pickup=VALLETTA, drop_off=drop_off, kind=dispatch_pb2.ORDER_KIND_INSTANT)
    return str(client.create(message=message).order.order_id)


def order_ids(route: route_pb2.Route) -> list[str]:
    return list(dict.fromkeys(s.order_id for s in route.stops))


def test_accepted_offers_build_the_route_and_a_reschedule_leaves_it(
    client: Client, r: redis.Redis, redis_server: RedisServer, redis_db: int
) -> None:
    driver = Driver(client, r, own_redis_db(redis_server.url, redis_db))
    first = instant(client, SLIEMA)
    assert driver.accept_next_offer() == [first]
    update = driver.command("route_update")
    assert (update.reason, update.route.version) == ("offer_accepted", 1)
    kinds = [s.kind for s in update.route.stops]
    assert kinds == [route_pb2.STOP_KIND_PICKUP, route_pb2.STOP_KIND_DROP_OFF]
    assert len(update.route.legs) == 2 and update.route.legs[1].steps
    start = update.route.legs[0].geometry[0]
    assert haversine_m(LatLng(start.lat, start.lng), LatLng(*NEAR)) < 100
    got = client.get(first)
    assert got.status == common_pb2.ORDER_STATUS_ASSIGNED
    assert got.route_id == update.route.route_id
    mirrored: Any = r.hget(route_plans.plan_key(driver.driver_id), route_plans.FIELD_VERSION)
    assert int(mirrored) == 1
    # Acks dispatch must ignore: another driver's (past the gateway's own check), and of a
    # version the route never had. Checked once the next answer, behind them, is applied.
    route_id = update.route.route_id
    intruder = ConnectRequest(seq=1, route_ack=driver_pb2.RouteAck(route_id=route_id, version=1))
    driver_event(r, f"drv-intruder-{uuid.uuid4().hex[:6]}", 1, intruder)
    driver.event(route_ack=driver_pb2.RouteAck(route_id=route_id, version=7))

    # A second accepted offer joins the same route as its next version.
    second = instant(client, MSIDA)
    assert driver.accept_next_offer() == [second]
    update = driver.command("route_update")
    assert (update.reason, update.route.version) == ("offer_accepted", 2)
    assert sorted(order_ids(update.route)) == sorted([first, second])
    assert len(update.route.legs) == 4
    assert client.get(second).route_id == update.route.route_id
    assert update.route.acked_version == 0

    # Rescheduling an order takes its stops off the route.
    request = ops.RescheduleOrderRequest(order_id=first, drop_off_window=window(86400, 3600))
    client.orders.RescheduleOrder(request, metadata=client.md)
    update = driver.command("route_update")
    assert (update.reason, update.route.version) == ("rescheduled", 3)
    assert order_ids(update.route) == [second]
    route = client.admin.GetRoute(
        dps.GetRouteRequest(driver_id=driver.driver_id), metadata=client.md
    ).route
    assert route.version == 3 and order_ids(route) == [second]

    # Picked up: the pickup stop is completed, and later versions show it behind the driver.
    pickup = next(s for s in route.stops if s.kind == route_pb2.STOP_KIND_PICKUP)
    driver.event(
        stop=driver_pb2.StopEvent(
            order_id=second, stop_id=pickup.stop_id, kind=driver_pb2.STOP_EVENT_KIND_PICKED_UP
        )
    )
    wait_until(lambda: client.get(second).status == common_pb2.ORDER_STATUS_PICKED_UP, 15)
    # Refused at the door: the order returns to its origin, a RETURN stop ends the route.
    refused = driver_pb2.FailedAttempt(order_id=second, reason=common_pb2.FAILURE_REASON_REFUSED)
    driver.event(failed_attempt=refused)
    update = driver.command("route_update")
    assert (update.reason, update.route.version) == ("failed_attempt", 4)
    kinds = [(s.kind, s.completed) for s in update.route.stops]
    assert kinds == [(route_pb2.STOP_KIND_PICKUP, True), (route_pb2.STOP_KIND_RETURN, False)]
    back = update.route.stops[1]
    assert (back.location.lat, back.location.lng) == VALLETTA and back.order_id == second
    assert not update.route.legs[0].geometry and update.route.legs[1].geometry
    assert client.get(second).status == common_pb2.ORDER_STATUS_RETURNED
