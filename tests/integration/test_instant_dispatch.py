"""Instant dispatch end to end: a real dispatch process (matcher, offers, sweeper), real
PostgreSQL, Redis live state written in the documented shape (core.live_state_keys), the real
road graph. Offers are observed on the drivers' command channels; answers go in through the
driver-events stream as the gateway writes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.driver.v1 import driver_pb2

from core import topics
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
)

pytestmark = pytest.mark.integration
OFFER_TIMEOUT_S = 2.0
NEAR = (35.8975, 14.5125)  # a few hundred metres from the Valletta pickup
FAR = (35.8935, 14.5060)  # Floriana, over a kilometre away


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
        instant_offer_timeout_s=OFFER_TIMEOUT_S,
        instant_sweep_interval_s=0.2,
        instant_max_candidates=500,
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
    """A registered driver of the test's tenant with its command channel subscribed."""

    driver_id: str
    r: redis.Redis
    commands: Any

    def at(self, where: tuple[float, float], status: int = common_pb2.DRIVER_STATUS_IDLE) -> None:
        """Write the live state as the tracking processor does."""
        put_live_state(self.r, self.driver_id, where, status)

    def command(self, kind: str) -> Any:
        """The next command of ``kind`` on the channel (others are skipped)."""
        return command_of_kind(self.commands, kind, self.driver_id, timeout=15)

    def answer(self, offer_id: str, accepted: bool, seq: int = 1) -> None:
        answer = driver_pb2.OfferAnswer(
            offer_id=offer_id, accepted=accepted, reject_reason="" if accepted else "busy"
        )
        driver_event(self.r, self.driver_id, seq, ConnectRequest(offer_answer=answer))


def make_driver(client: Client, r: redis.Redis, url: str, label: str) -> Driver:
    driver = Driver()
    driver.driver_id = register_driver(client, label)
    driver.r = r
    driver.commands = subscribe(url, topics.driver_commands_channel(driver.driver_id))
    return driver


def instant(client: Client, drop_off: tuple[float, float] = SLIEMA) -> str:
    message = order(pickup=VALLETTA, drop_off=drop_off, kind=dispatch_pb2.ORDER_KIND_INSTANT)
    return str(client.create(message=message).order.order_id)


def status_is(client: Client, order_id: str, status: int, driver_id: str) -> bool:
    current = client.get(order_id)
    return bool(current.status == status and current.driver_id == driver_id)


@pytest.fixture
def pair(
    client: Client, r: redis.Redis, redis_server: RedisServer, redis_db: int
) -> tuple[Driver, Driver]:
    near = make_driver(client, r, own_redis_db(redis_server.url, redis_db), "near")
    far = make_driver(client, r, own_redis_db(redis_server.url, redis_db), "far")
    near.at(NEAR)
    far.at(FAR)
    return near, far


def test_offer_goes_to_the_nearest_idle_driver_and_accept_assigns(
    client: Client, pair: tuple[Driver, Driver]
) -> None:
    near, _far = pair
    order_id = instant(client)
    offer = near.command("offer")
    assert [o.order_id for o in offer.orders] == [order_id]
    assert offer.added_duration_s > 0 and offer.added_distance_m > 0
    assert status_is(client, order_id, common_pb2.ORDER_STATUS_OFFERED, near.driver_id)
    near.answer(offer.offer_id, accepted=True)
    wait_until(
        lambda: status_is(client, order_id, common_pb2.ORDER_STATUS_ASSIGNED, near.driver_id),
        10,
        what="assigned",
    )
    near.answer(offer.offer_id, accepted=True, seq=2)  # a replayed answer changes nothing
    near.answer(offer.offer_id, accepted=False, seq=3)
    types = [e.event_type for e in client.events(order_id)]
    assert types == ["created", "offered", "offer_accepted"]


def test_reject_reoffers_to_the_next_best_driver(
    client: Client, pair: tuple[Driver, Driver]
) -> None:
    near, far = pair
    order_id = instant(client)
    first = near.command("offer")
    near.answer(first.offer_id, accepted=False)
    second = far.command("offer")
    assert [o.order_id for o in second.orders] == [order_id]
    assert second.offer_id != first.offer_id
    assert status_is(client, order_id, common_pb2.ORDER_STATUS_OFFERED, far.driver_id)
    far.answer(second.offer_id, accepted=True)
    wait_until(
        lambda: status_is(client, order_id, common_pb2.ORDER_STATUS_ASSIGNED, far.driver_id),
        10,
        what="assigned to the second driver",
    )
    types = [e.event_type for e in client.events(order_id)]
    assert types == ["created", "offered", "offer_declined", "offered", "offer_accepted"]


def test_timeout_withdraws_the_offer_and_reoffers(
    client: Client, pair: tuple[Driver, Driver]
) -> None:
    near, far = pair
    order_id = instant(client)
    first = near.command("offer")
    withdrawn = near.command("offer_withdrawn")
    assert withdrawn.offer_id == first.offer_id and withdrawn.reason == "expired"
    second = far.command("offer")
    assert [o.order_id for o in second.orders] == [order_id]
    near.answer(first.offer_id, accepted=True)  # too late: nothing happens
    far.answer(second.offer_id, accepted=True)
    wait_until(
        lambda: status_is(client, order_id, common_pb2.ORDER_STATUS_ASSIGNED, far.driver_id),
        10,
        what="assigned after the re-offer",
    )
    types = [e.event_type for e in client.events(order_id)]
    assert types[:4] == ["created", "offered", "offer_expired", "offered"]


def test_nearby_pickups_and_drop_offs_are_batched_on_one_driver(
    client: Client, r: redis.Redis, redis_server: RedisServer, redis_db: int
) -> None:
    near = make_driver(client, r, own_redis_db(redis_server.url, redis_db), "near")
    far = make_driver(client, r, own_redis_db(redis_server.url, redis_db), "far")
    # Orders first, drivers after: both orders wait for the same round.
    first = instant(client, SLIEMA)
    second = instant(client, (35.9135, 14.5030))
    near.at(NEAR)
    far.at(FAR)
    offer = near.command("offer")
    assert sorted(o.order_id for o in offer.orders) == sorted([first, second])
    for order_id in (first, second):
        assert status_is(client, order_id, common_pb2.ORDER_STATUS_OFFERED, near.driver_id)
