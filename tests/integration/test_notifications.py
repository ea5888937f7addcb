"""Customer notifications end to end, through the default channel (a customer.notification
webhook to a real HTTP receiver): one text per status change customers care about, never
twice for a replayed event, and a delay notification when the ETA tracking records passes the
promised window by the margin (again only when it grows by another margin)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2 as opb
from lastmile.driver.v1 import driver_pb2

from core import topics
from ops.servers import PostgresServer, RedisServer
from tests.helpers import wait_until
from tests.integration.orders_support import (
    Client,
    ConnectRequest,
    Dispatch,
    driver_event,
    isolated_dispatch,
    new_tenant,
    order,
    register_and_assign,
    sql,
)
from tests.integration.webhooks_support import Hooks, Receiver, append_proof

pytestmark = pytest.mark.integration
MARGIN_S = 300.0
SETTINGS = {
    "webhook_timeout_s": 1.0,
    "webhook_backoff_base_s": 0.2,
    "webhook_backoff_max_s": 0.4,
    "webhook_poll_interval_s": 0.05,
    "notify_delay_margin_s": MARGIN_S,
}
S = common_pb2


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


def _notified(receiver: Receiver, name: str, order_id: str) -> list[dict[str, Any]]:
    """The notification payloads of an order, in arrival order (first arrivals only)."""
    seen: set[str] = set()
    found = []
    for request in receiver.received(name):
        body = request.payload
        if body["order_id"] == order_id and request.delivery_id not in seen:
            seen.add(request.delivery_id)
            found.append(body)
    return found


def _new_order(client: Client, ref: str) -> str:
    message = order(ref=ref)
    message.customer_name = "Anna"
    message.customer_phone = "+356 2100 0000"
    order_id: str = client.create(message=message).order.order_id
    return order_id


def _stop(r: redis.Redis, driver_id: str, seq: int, order_id: str, leg: str, kind: Any) -> None:
    stop = driver_pb2.StopEvent(order_id=order_id, stop_id=f"{order_id}-{leg}", kind=kind)
    driver_event(r, driver_id, seq, ConnectRequest(seq=seq, stop=stop))


def _wait_status(client: Client, order_id: str, status: int) -> None:
    wait_until(lambda: client.get(order_id).status == status, 10, what=S.OrderStatus.Name(status))


def _picked_up(client: Client, dispatch: Dispatch, r: redis.Redis, order_id: str) -> str:
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    register_and_assign(client, dispatch.settings.database_url, order_id, driver_id)
    _stop(r, driver_id, 1, order_id, "p", driver_pb2.STOP_EVENT_KIND_ARRIVED)
    _stop(r, driver_id, 2, order_id, "p", driver_pb2.STOP_EVENT_KIND_PICKED_UP)
    _wait_status(client, order_id, S.ORDER_STATUS_PICKED_UP)
    return driver_id


def _rows(dispatch: Dispatch, order_id: str) -> list[tuple[str, int, str]]:
    rows = sql(
        dispatch.settings.database_url,
        "SELECT trigger, sequence, text FROM customer_notifications WHERE order_id = $1"
        " ORDER BY created_at, sequence",
        order_id,
    )
    return [(row["trigger"], row["sequence"], row["text"]) for row in rows]


def _fanned_in(r: redis.Redis, entry_id: bytes | str) -> bool:
    """Whether the webhook fan-in read and acked everything up to ``entry_id``."""
    for group in r.xinfo_groups(topics.ORDER_EVENTS):
        if group["name"] == b"dispatch-webhooks":
            last = tuple(int(x) for x in group["last-delivered-id"].split(b"-"))
            raw = entry_id if isinstance(entry_id, str) else entry_id.decode()
            wanted = tuple(int(x) for x in raw.split("-"))
            return bool(last >= wanted and group["pending"] == 0)
    return False


def test_status_changes_notify_once_each_even_when_replayed(
    dispatch: Dispatch, receiver: Receiver, r: redis.Redis, hooks: Hooks
) -> None:
    name = f"sms-{uuid.uuid4().hex[:8]}"
    hook = hooks.create(receiver.endpoint(name), "customer.notification")
    client = hooks.client
    order_id = _new_order(client, "A-42")
    driver_id = _picked_up(client, dispatch, r, order_id)
    _stop(r, driver_id, 3, order_id, "d", driver_pb2.STOP_EVENT_KIND_ARRIVED)
    _wait_status(client, order_id, S.ORDER_STATUS_NEARBY)
    append_proof(r, client.tenant, order_id, driver_id, f"prf-{name}")
    _wait_status(client, order_id, S.ORDER_STATUS_DELIVERED)

    wait_until(lambda: len(_notified(receiver, name, order_id)) >= 4, 20, what="4 notifications")
    notes = _notified(receiver, name, order_id)
    assert [n["data"]["trigger"] for n in notes] == ["assigned", "picked_up", "nearby", "delivered"]
    texts = [n["data"]["text"] for n in notes]
    assert texts[0].startswith("Hi Anna, a driver will bring your order A-42 on ")
    assert texts[1:3] == [
        "Hi Anna, your order A-42 is on its way.",
        "Hi Anna, your driver is nearly there with your order A-42.",
    ]
    assert texts[3].startswith("Hi Anna, your order A-42 was delivered at ")
    assert all(n["type"] == "customer.notification" for n in notes)
    assert notes[0]["data"]["customer_phone"] == "+356 2100 0000"
    assert [(t, text) for t, _, text in _rows(dispatch, order_id)] == list(
        zip(["assigned", "picked_up", "nearby", "delivered"], texts, strict=True)
    )

    # Replay every event of the order on the bus, as a relay crash after publishing would.
    entries: Any = r.xrange(topics.ORDER_EVENTS)
    replayed = [
        r.xadd(topics.ORDER_EVENTS, f) for _, f in entries if f[b"order"] == order_id.encode()
    ]
    wait_until(lambda: _fanned_in(r, replayed[-1]), 10, what="the replay fanned in")
    assert len(_rows(dispatch, order_id)) == 4
    assert len(hooks.deliveries(hook.webhook_id)) == 4
    assert len(_notified(receiver, name, order_id)) == 4


def test_a_failed_attempt_and_its_reschedule_are_notified(
    dispatch: Dispatch, receiver: Receiver, r: redis.Redis, hooks: Hooks
) -> None:
    name = f"sms-{uuid.uuid4().hex[:8]}"
    hooks.create(receiver.endpoint(name), "customer.notification")
    client = hooks.client
    order_id = _new_order(client, "B-7")
    _picked_up(client, dispatch, r, order_id)
    failed = opb.ReportFailedAttemptRequest(
        order_id=order_id, reason=S.FAILURE_REASON_ACCESS_PROBLEM
    )
    client.orders.ReportFailedAttempt(failed, metadata=client.md)  # policy: RESCHEDULE
    _wait_status(client, order_id, S.ORDER_STATUS_RESCHEDULED)
    wait_until(lambda: len(_notified(receiver, name, order_id)) >= 4, 20, what="4 notifications")
    notes = {n["data"]["trigger"]: n["data"]["text"] for n in _notified(receiver, name, order_id)}
    assert list(notes) == ["assigned", "picked_up", "failed", "rescheduled"]
    assert notes["failed"] == (
        "Hi Anna, we could not deliver your order B-7: the driver could not get to the door."
        " We will be in touch."
    )
    assert notes["rescheduled"].startswith("Hi Anna, your order B-7 will now arrive on ")


def _predict(dispatch: Dispatch, order_id: str, arrival: dt.datetime) -> int:
    """Record an ETA as tracking's ETA engine does; returns the prediction id."""
    rows = sql(
        dispatch.settings.database_url,
        "INSERT INTO eta_predictions (order_id, driver_id, predicted_at, predicted_arrival,"
        " remaining_s, remaining_m) VALUES ($1, 'drv-eta', now(), $2, 600, 4000)"
        " RETURNING prediction_id",
        order_id,
        arrival,
    )
    return int(rows[0]["prediction_id"])


def _read_past(dispatch: Dispatch, prediction_id: int) -> bool:
    rows = sql(
        dispatch.settings.database_url,
        "SELECT position FROM webhook_cursors WHERE name = 'eta-delays'",
    )
    return bool(rows and rows[0]["position"] >= prediction_id)


def _delays(receiver: Receiver, name: str, order_id: str) -> list[str]:
    notes = _notified(receiver, name, order_id)
    return [n["data"]["text"] for n in notes if n["data"]["trigger"] == "delayed"]


def test_a_late_eta_notifies_a_delay_once_per_margin(
    dispatch: Dispatch, receiver: Receiver, hooks: Hooks
) -> None:
    name = f"sms-{uuid.uuid4().hex[:8]}"
    hooks.create(receiver.endpoint(name), "customer.notification")
    client = hooks.client
    order_id = _new_order(client, "C-3")
    register_and_assign(client, dispatch.settings.database_url, order_id, f"drv-{name}")
    end = client.get(order_id).drop_off_window.end.ToDatetime(tzinfo=dt.UTC)
    cancelled = _new_order(client, "C-4")
    client.orders.CancelOrder(opb.CancelOrderRequest(order_id=cancelled), metadata=client.md)

    on_time = _predict(dispatch, order_id, end + dt.timedelta(seconds=MARGIN_S - 10))
    _predict(dispatch, cancelled, end + dt.timedelta(hours=2))  # not on its way: no delay
    wait_until(lambda: _read_past(dispatch, on_time), 10, what="the watcher read it")
    assert _delays(receiver, name, order_id) == []

    _predict(dispatch, order_id, end + dt.timedelta(seconds=MARGIN_S + 100))  # level 1
    wait_until(lambda: _delays(receiver, name, order_id), 10, what="a delay notification")
    (first,) = _delays(receiver, name, order_id)
    local_end = end.strftime("%H:%M")
    assert first.startswith("Hi Anna, sorry, your order C-3 is running late: it should arrive")
    assert first.endswith(f"about 7 min after the promised {local_end}.")

    same_level = _predict(dispatch, order_id, end + dt.timedelta(seconds=2 * MARGIN_S - 10))
    wait_until(lambda: _read_past(dispatch, same_level), 10, what="the watcher read it")
    worse = _predict(dispatch, order_id, end + dt.timedelta(seconds=2 * MARGIN_S + 60))
    wait_until(lambda: len(_delays(receiver, name, order_id)) >= 2, 10, what="a worse delay")
    assert _read_past(dispatch, worse)
    assert _delays(receiver, name, order_id)[1].endswith(
        f"about 11 min after the promised {local_end}."
    )
    triggers = [t for t, _, _ in _rows(dispatch, order_id)]
    assert triggers == ["assigned", "delayed", "delayed"]
    assert _notified(receiver, name, cancelled) == []
    assert _rows(dispatch, cancelled) == []
