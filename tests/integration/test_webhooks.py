"""Webhooks end to end: a real dispatch process and a real HTTP receiver started by the test.
Events arrive signed and in order per order; 500s and timeouts are retried with every attempt
logged; a delivery that always fails is dead-lettered and redelivered by hand; a crash of the
sender loses nothing; bad requests get clear statuses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2 as opb
from lastmile.driver.v1 import driver_pb2
from lastmile.integration.v1 import integration_pb2 as ipb
from lastmile.integration.v1 import integration_service_pb2 as wpb
from lastmile.tracking.v1 import tracking_pb2

from core import topics
from core.auth import Role
from ops.servers import PostgresServer, RedisServer
from tests.helpers import wait_until
from tests.integration.orders_support import (
    Client,
    ConnectRequest,
    Dispatch,
    driver_event,
    error_of,
    isolated_dispatch,
    new_tenant,
    picked_up_by_driver,
    register_and_assign,
    sql,
)
from tests.integration.webhooks_support import (
    HANG,
    Hooks,
    Receiver,
    append_proof,
    types_by_order,
)

pytestmark = pytest.mark.integration
DELIVERED = ipb.DELIVERY_STATE_DELIVERED
DEAD = ipb.DELIVERY_STATE_DEAD
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# Short timeouts and backoff keep the retries quick.
SETTINGS = {
    "webhook_timeout_s": 1.0,
    "webhook_max_attempts": 3,
    "webhook_backoff_base_s": 0.2,
    "webhook_backoff_max_s": 0.4,
    "webhook_poll_interval_s": 0.05,
}


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int, road_graph: Path
) -> Iterator[Dispatch]:
    # Assigning an order places it on the driver's route: the dispatch process needs roads.
    settings = {**SETTINGS, "graph_dir": road_graph.parent}
    with isolated_dispatch(postgres_server, redis_server.url, redis_db, **settings) as service:
        yield service


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def r(dispatch: Dispatch) -> redis.Redis:
    return redis.Redis.from_url(dispatch.settings.redis_url)


@pytest.fixture
def hooks(dispatch: Dispatch) -> Iterator[Hooks]:
    client = Client(dispatch, new_tenant())
    yield Hooks(client)
    client.close()


def _states(hooks: Hooks, webhook_id: str) -> list[int]:
    return sorted(d.state for d in hooks.deliveries(webhook_id))


def _cancel(client: Client, order_id: str) -> None:
    request = opb.CancelOrderRequest(order_id=order_id, reason="test")
    client.orders.CancelOrder(request, metadata=client.md)


def _status(client: Client, order_id: str, status: int) -> bool:
    return bool(client.get(order_id).status == status)


def test_events_arrive_signed_and_in_order_per_order(
    dispatch: Dispatch, receiver: Receiver, r: redis.Redis, hooks: Hooks
) -> None:
    client, tag = hooks.client, uuid.uuid4().hex[:8]
    everything = hooks.create(receiver.endpoint(f"all-{tag}"))
    only_delivered = hooks.create(receiver.endpoint(f"delivered-{tag}"), "order.delivered")
    stranger = Hooks(Client(dispatch, new_tenant()))
    strangers_hook = stranger.create(receiver.endpoint(f"stranger-{tag}"))
    assert everything.signing_secret.startswith("whsec_")
    listed = hooks.webhooks()
    assert {w.webhook_id for w in listed} == {everything.webhook_id, only_delivered.webhook_id}
    assert all(w.signing_secret == "" for w in listed)

    first, driver_id = picked_up_by_driver(client, dispatch, r)
    arrived = driver_pb2.StopEvent(
        order_id=first, stop_id=f"{first}-d", kind=driver_pb2.STOP_EVENT_KIND_ARRIVED
    )
    driver_event(r, driver_id, 3, ConnectRequest(seq=3, stop=arrived))
    wait_until(lambda: _status(client, first, common_pb2.ORDER_STATUS_NEARBY), 10)
    # The proof goes straight onto its stream, while NEARBY reaches the order-event stream
    # through the outbox relay: once the status is stored, the relay may still be behind (a
    # busy box), and the proof would then come first. In the product a proof follows the
    # arrival by the seconds a photo, its upload and the confirmation take.
    wait_until(
        lambda: "order.nearby" in types_by_order(receiver.received(f"all-{tag}")).get(first, []),
        30,
        what="order.nearby sent",
    )
    append_proof(r, client.tenant, first, driver_id, f"prf-{tag}")
    wait_until(lambda: _status(client, first, common_pb2.ORDER_STATUS_DELIVERED), 10)
    second = client.create().order.order_id
    _cancel(client, second)
    fence = f"gf-{tag}"
    sql(
        dispatch.settings.database_url,
        "INSERT INTO geofences (geofence_id, tenant_id, shape) VALUES ($1, $2, $3)",
        fence,
        client.tenant,
        '{"circle": {"lat": 35.9, "lng": 14.5, "radius_m": 100}}',
    )
    exited = tracking_pb2.GeofenceEvent(
        geofence_id=fence, driver_id=driver_id, kind=tracking_pb2.GEOFENCE_EVENT_KIND_EXIT
    )
    r.xadd(topics.GEOFENCE_EVENTS, {"data": exited.SerializeToString()})

    note = "customer.notification"  # a webhook without a filter gets every type
    expected = {
        first: [
            "order.created",
            "order.assigned",
            note,
            "order.picked_up",
            note,
            "order.nearby",
            note,
            "proof.captured",  # the proof arrives before the delivery it causes
            "order.delivered",
            note,
        ],
        second: ["order.created", "order.cancelled"],
        "": ["geofence.exited"],
    }
    total = sum(len(types) for types in expected.values())
    wait_until(lambda: len(receiver.received(f"all-{tag}")) >= total, 30, what="every event")
    got = receiver.received(f"all-{tag}")
    assert types_by_order(got) == expected
    for request in got:
        body = request.payload
        assert request.signed_by(everything.signing_secret)
        assert not request.signed_by(strangers_hook.signing_secret)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-lastmile-event"] == body["type"]
        assert body["tenant_id"] == client.tenant
        assert set(body) == {"id", "type", "created_at", "tenant_id", "order_id", "data"}
    assigned = next(q.payload for q in got if q.payload["type"] == "order.assigned")
    assert assigned["data"]["details"]["driver_id"] == driver_id
    assert assigned["id"] == f"order:{first}:2"
    log = hooks.deliveries(everything.webhook_id)
    assert {d.delivery_id for d in log} == {q.delivery_id for q in got}
    wait_until(lambda: set(_states(hooks, everything.webhook_id)) == {DELIVERED}, 10)
    wait_until(lambda: receiver.received(f"delivered-{tag}"), 10)
    (delivered,) = receiver.received(f"delivered-{tag}")
    assert delivered.payload["type"] == "order.delivered"
    assert delivered.signed_by(only_delivered.signing_secret)
    assert stranger.deliveries(strangers_hook.webhook_id) == []
    assert receiver.received(f"stranger-{tag}") == []


def test_a_500_is_retried_and_every_attempt_logged(receiver: Receiver, hooks: Hooks) -> None:
    name = f"flaky-{uuid.uuid4().hex[:8]}"
    hook = hooks.create(receiver.endpoint(name, script=[500], default=200), "order.created")
    order_id = hooks.client.create().order.order_id
    wait_until(lambda: _states(hooks, hook.webhook_id) == [DELIVERED], 15)
    first, second = receiver.received(name)
    assert first.delivery_id == second.delivery_id
    assert first.payload == second.payload and first.payload["order_id"] == order_id
    assert second.signed_by(hook.signing_secret)
    (delivery,) = hooks.deliveries(hook.webhook_id)
    attempts = [(a.attempt, a.response_code, a.succeeded) for a in delivery.attempts]
    assert attempts == [(1, 500, False), (2, 200, True)]
    assert delivery.attempts[0].error.startswith("HTTP 500")
    assert delivery.attempts[1].error == ""
    assert all(a.latency_ms > 0 and a.HasField("at") for a in delivery.attempts)
    assert delivery.attempt_count == 2 and delivery.HasField("delivered_at")
    assert delivery.event_id == f"order:{order_id}:1"


def test_a_timeout_is_retried(receiver: Receiver, hooks: Hooks) -> None:
    name = f"slow-{uuid.uuid4().hex[:8]}"
    hook = hooks.create(receiver.endpoint(name, script=[HANG], default=200), "order.created")
    hooks.client.create()
    wait_until(lambda: _states(hooks, hook.webhook_id) == [DELIVERED], 15)
    (delivery,) = hooks.deliveries(hook.webhook_id)
    attempts = [(a.attempt, a.response_code, a.succeeded) for a in delivery.attempts]
    assert attempts == [(1, 0, False), (2, 200, True)]
    assert delivery.attempts[0].error == "no answer within 1 s"
    assert len(receiver.received(name)) == 2


def test_always_500_is_dead_lettered_then_redelivered(receiver: Receiver, hooks: Hooks) -> None:
    name = f"broken-{uuid.uuid4().hex[:8]}"
    hook = hooks.create(receiver.endpoint(name, default=500), "order.created", "order.cancelled")
    order_id = hooks.client.create().order.order_id
    _cancel(hooks.client, order_id)
    wait_until(lambda: _states(hooks, hook.webhook_id) == [DEAD, DEAD], 20)
    got = receiver.received(name)
    # The cancellation waited for the creation until its last attempt failed.
    assert [q.payload["type"] for q in got] == ["order.created"] * 3 + ["order.cancelled"] * 3
    dead = hooks.deliveries(hook.webhook_id, state=DEAD)
    assert [d.event_type for d in dead] == ["order.cancelled", "order.created"]  # newest first
    assert all([a.response_code for a in d.attempts] == [500] * 3 for d in dead)
    assert hooks.deliveries(hook.webhook_id, state=DELIVERED) == []

    receiver.answer_with(name, 200)
    created = dead[1]
    again = hooks.redeliver(created.delivery_id)
    assert again.state == ipb.DELIVERY_STATE_PENDING
    assert again.redelivery_of == created.delivery_id and again.event_id == created.event_id
    assert again.delivery_id != created.delivery_id
    wait_until(lambda: len(receiver.received(name)) == 7, 10)
    last = receiver.received(name)[-1]
    assert last.delivery_id == again.delivery_id
    assert last.payload == got[0].payload and last.signed_by(hook.signing_secret)
    wait_until(lambda: hooks.deliveries(hook.webhook_id, state=DELIVERED), 10)
    (redelivered,) = hooks.deliveries(hook.webhook_id, state=DELIVERED)
    assert redelivered.delivery_id == again.delivery_id
    assert len(hooks.deliveries(hook.webhook_id, state=DEAD)) == 2  # the originals stay dead


def test_the_delivery_log_pages_newest_first(receiver: Receiver, hooks: Hooks) -> None:
    hook = hooks.create(receiver.endpoint(f"log-{uuid.uuid4().hex[:8]}"), "order.created")
    orders = [hooks.client.create().order.order_id for _ in range(3)]
    wait_until(lambda: _states(hooks, hook.webhook_id) == [DELIVERED] * 3, 15)
    request = wpb.ListWebhookDeliveriesRequest(webhook_id=hook.webhook_id, page_size=2)
    page = hooks.stub.ListWebhookDeliveries(request, metadata=hooks.md)
    assert len(page.deliveries) == 2 and page.next_page_token
    request.page_token = page.next_page_token
    rest = hooks.stub.ListWebhookDeliveries(request, metadata=hooks.md)
    assert len(rest.deliveries) == 1 and not rest.next_page_token
    seen = [d.order_id for d in [*page.deliveries, *rest.deliveries]]
    assert seen == orders[::-1]


def test_bad_input_gets_clear_statuses(
    dispatch: Dispatch, receiver: Receiver, hooks: Hooks
) -> None:
    for url in (
        "",
        "ftp://example.com/hook",
        "http://",
        "example.com/hook",
        "http://user:secret@example.com/hook",
        "https://example.com/hook#part",
        "http://exa mple.com/",
        "http://example.com:99999/",
    ):
        code, details = error_of(lambda: hooks.create(url))  # noqa: B023
        assert code == INVALID and "url" in details, url
    code, details = error_of(lambda: hooks.create("https://example.com/h", "order.exploded"))
    assert code == INVALID and "order.exploded" in details
    assert hooks.webhooks() == []  # nothing refused was kept

    stub, md = hooks.stub, hooks.md
    listing = wpb.ListWebhooksRequest()
    assert error_of(lambda: stub.ListWebhooks(listing))[0] == grpc.StatusCode.UNAUTHENTICATED
    driver = Client(dispatch, hooks.client.tenant, Role.DRIVER, "drv-x")
    denied = error_of(lambda: stub.ListWebhooks(listing, metadata=driver.md))[0]
    assert denied == grpc.StatusCode.PERMISSION_DENIED

    name = f"hang-{uuid.uuid4().hex[:8]}"
    hook = hooks.create(receiver.endpoint(name, default=HANG), "order.created")
    stranger = Hooks(Client(dispatch, new_tenant()))
    missing = wpb.DeleteWebhookRequest(webhook_id="wh_nope")
    assert error_of(lambda: stub.DeleteWebhook(missing, metadata=md))[0] == NOT_FOUND
    theirs = wpb.DeleteWebhookRequest(webhook_id=hook.webhook_id)
    assert error_of(lambda: stranger.stub.DeleteWebhook(theirs, metadata=stranger.md))[0] == (
        NOT_FOUND
    )
    assert error_of(lambda: stranger.deliveries(hook.webhook_id))[0] == NOT_FOUND
    for request in (
        wpb.ListWebhookDeliveriesRequest(),
        wpb.ListWebhookDeliveriesRequest(webhook_id=hook.webhook_id, page_token="nope"),
        wpb.ListWebhookDeliveriesRequest(webhook_id=hook.webhook_id, page_size=-1),
        wpb.ListWebhookDeliveriesRequest(webhook_id=hook.webhook_id, state=99),  # type: ignore[arg-type]
    ):
        assert error_of(lambda: stub.ListWebhookDeliveries(request, metadata=md))[0] == INVALID  # noqa: B023
    assert error_of(lambda: hooks.redeliver(""))[0] == INVALID
    assert error_of(lambda: hooks.redeliver("dlv_nope"))[0] == NOT_FOUND

    hooks.client.create()  # its delivery hangs: open for three 1 s attempts
    wait_until(lambda: receiver.received(name), 10)
    (open_delivery,) = hooks.deliveries(hook.webhook_id)
    code, details = error_of(lambda: hooks.redeliver(open_delivery.delivery_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "still being delivered" in details
    assert error_of(lambda: stranger.redeliver(open_delivery.delivery_id))[0] == NOT_FOUND

    stub.DeleteWebhook(theirs, metadata=md)
    assert hooks.webhooks() == []
    assert error_of(lambda: hooks.deliveries(hook.webhook_id))[0] == NOT_FOUND
    rows = sql(
        dispatch.settings.database_url,
        "SELECT count(*) AS n FROM webhook_deliveries WHERE webhook_id = $1",
        hook.webhook_id,
    )
    assert rows[0]["n"] == 0  # its pending delivery went with it


def test_a_crash_of_the_sender_loses_nothing(
    dispatch: Dispatch, receiver: Receiver, hooks: Hooks
) -> None:
    """Runs last: it kills the module's dispatch process (SIGKILL) mid-way and starts it
    again. At least once: a delivery in flight at the crash may arrive twice, with the same
    delivery id and body."""
    name = f"crash-{uuid.uuid4().hex[:8]}"
    types = ("order.created", "order.assigned", "order.cancelled")
    hook = hooks.create(receiver.endpoint(name, default=(0.3, 200)), *types)
    client = hooks.client
    orders = []
    for i in range(4):
        order_id = client.create().order.order_id
        register_and_assign(client, dispatch.settings.database_url, order_id, f"drv-c{i}-{name}")
        _cancel(client, order_id)
        orders.append(order_id)
    wait_until(lambda: len(receiver.received(name)) >= 3, 20, what="first deliveries")
    dispatch.crash()
    dispatch.start()
    wait_until(lambda: _states(hooks, hook.webhook_id) == [DELIVERED] * 12, 60, what="all 12")

    deliveries = hooks.deliveries(hook.webhook_id)
    got = receiver.received(name)
    bodies: dict[str, set[bytes]] = {}
    for request in got:
        bodies.setdefault(request.delivery_id, set()).add(request.body)
        assert request.signed_by(hook.signing_secret)
    assert set(bodies) == {d.delivery_id for d in deliveries}  # none lost
    assert all(len(b) == 1 for b in bodies.values())  # a repeat is the same delivery
    firsts, seen = [], set()
    for request in got:  # the first arrival of each delivery, in arrival order
        if request.delivery_id not in seen:
            seen.add(request.delivery_id)
            firsts.append(request)
    assert types_by_order(firsts) == {o: list(types) for o in orders}
