"""The origin-facing API end to end on a real dispatch process (own PostgreSQL database and
Redis database, slot 8): WatchOriginOrders, AcceptOrder, SetPreparationTime, MarkReady,
RejectOrder with reroutes to fallback origins, who may call, and bad inputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2 as pb
from lastmile.origin.v1 import origin_pb2
from lastmile.origin.v1 import origin_service_pb2 as opb
from lastmile.tracking.v1 import tracking_service_pb2

from core import topics
from core.auth import Role
from ops.servers import PostgresServer, RedisServer
from tests.helpers import undefined_enum, wait_until
from tests.integration.orders_support import (
    Client,
    Dispatch,
    code_of,
    error_of,
    isolated_dispatch,
    new_tenant,
    subscribe,
)
from tests.integration.origin_support import (
    HAMRUN,
    Watch,
    accept,
    add_origin,
    change_of,
    mark_ready,
    minutes,
    origin_client,
    reject,
    seconds_from_now,
    set_preparation,
)

pytestmark = pytest.mark.integration
D = origin_pb2


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int
) -> Iterator[Dispatch]:
    # A long answer timeout: here origins answer themselves (the policies have their module).
    with isolated_dispatch(
        postgres_server, redis_server.url, redis_db, origin_answer_timeout_s=900.0
    ) as service:
        yield service


@pytest.fixture
def staff(dispatch: Dispatch) -> Iterator[Client]:
    c = Client(dispatch, new_tenant())
    yield c
    c.close()


def events(staff: Client, order_id: str) -> list[Any]:
    return staff.events(order_id)


def test_watch_accept_preparation_ready(staff: Client, dispatch: Dispatch) -> None:
    origin_id = add_origin(staff, preparation_s=600)
    kitchen = origin_client(dispatch, staff.tenant, origin_id)
    watch = Watch(kitchen)  # empty origin_id: the token's own origin
    order_id = staff.create(origin_id=origin_id).order.order_id

    arrived = watch.until(change_of(order_id, "created"))
    assert arrived.decision == D.ORIGIN_DECISION_PENDING
    assert arrived.origin_id == origin_id and arrived.status == common_pb2.ORDER_STATUS_PENDING
    assert 800 < seconds_from_now(arrived.answer_by) <= 900

    accepted = accept(kitchen, order_id, minutes(15))
    assert accepted.decision == D.ORIGIN_DECISION_ACCEPTED
    assert 880 < seconds_from_now(accepted.ready_at) <= 900
    assert accepted.preparation.seconds == 900
    seen = watch.until(change_of(order_id, "origin_accepted"))
    assert seen.ready_at == accepted.ready_at and seen.decision == D.ORIGIN_DECISION_ACCEPTED
    assert accept(kitchen, order_id, minutes(1)).ready_at == accepted.ready_at  # no change

    shorter = set_preparation(kitchen, order_id, minutes(5))
    assert 280 < seconds_from_now(shorter.ready_at) <= 300
    assert watch.until(change_of(order_id, "origin_preparation_set")).ready_at == shorter.ready_at

    ready = mark_ready(kitchen, order_id)
    assert ready.decision == D.ORIGIN_DECISION_READY
    assert -10 < seconds_from_now(ready.ready_at) <= 0
    assert watch.until(change_of(order_id, "origin_ready")).decision == D.ORIGIN_DECISION_READY
    assert mark_ready(kitchen, order_id).ready_at == ready.ready_at  # again: nothing changes
    watch.close()

    history = events(staff, order_id)
    assert [e.event_type for e in history] == [
        "created",
        "origin_accepted",
        "origin_preparation_set",
        "origin_ready",
    ]
    assert {e.actor for e in history[1:]} == {f"origin:{origin_id}"}
    assert json.loads(history[1].details_json)["preparation_s"] == 900
    # Dispatchers following WatchOrders see the decisions too.
    dispatchers = staff.orders.WatchOrders(
        pb.WatchOrdersRequest(order_ids=[order_id], after_cursor="0-0"),
        metadata=staff.md,
        timeout=30,
    )
    stream = iter(dispatchers)
    relayed = [next(stream).event.event_type for _ in range(4)]
    dispatchers.cancel()  # type: ignore[no-untyped-call]
    assert relayed == [e.event_type for e in history]

    # Resuming from the first message's cursor replays what followed; a fresh watch starts
    # with the open orders.
    resumed = Watch(kitchen, origin_id, after_cursor=arrived.cursor)
    assert [resumed.next().change for _ in range(3)] == [
        "origin_accepted",
        "origin_preparation_set",
        "origin_ready",
    ]
    resumed.close()
    fresh = Watch(staff, origin_id)  # a dispatcher of the tenant may watch any origin
    first = fresh.next()
    assert (first.order_id, first.change, first.decision) == (order_id, "", D.ORIGIN_DECISION_READY)
    fresh.close()


def test_accept_without_preparation_uses_the_origins_default(
    staff: Client, dispatch: Dispatch
) -> None:
    origin_id = add_origin(staff, preparation_s=1200)
    order_id = staff.create(origin_id=origin_id).order.order_id
    accepted = accept(staff, order_id)  # a dispatcher may answer for the origin
    assert 1180 < seconds_from_now(accepted.ready_at) <= 1200
    assert events(staff, order_id)[-1].actor == "dispatcher:d1"


def test_reject_reroutes_to_the_first_open_fallback_then_cancels(
    staff: Client, dispatch: Dispatch
) -> None:
    last = add_origin(staff, where=HAMRUN)
    closed = add_origin(staff, closed=True)
    first = add_origin(staff, fallbacks=(closed, last))
    kitchens = {o: origin_client(dispatch, staff.tenant, o) for o in (first, last)}
    watches = {o: Watch(kitchens[o]) for o in (first, last)}
    order_id = staff.create(origin_id=first).order.order_id
    watches[first].until(change_of(order_id, "created"))

    mine = reject(kitchens[first], order_id, "oven broken")
    assert (mine.decision, mine.origin_id) == (D.ORIGIN_DECISION_REJECTED, last)
    assert mine.reject_reason == "oven broken"
    moved = staff.get(order_id)
    assert moved.status == common_pb2.ORDER_STATUS_PENDING and moved.origin_id == last
    assert (moved.pickup_address.location.lat, moved.pickup_address.location.lng) == HAMRUN
    rejected, rerouted = events(staff, order_id)[-2:]
    assert (rejected.event_type, rerouted.event_type) == ("origin_rejected", "origin_rerouted")
    details = json.loads(rejected.details_json)
    assert details["outcome"] == "rerouted" and details["origin_reason"] == "oven broken"
    assert f"fallback {closed} closed" in details["explanation"]
    seen = watches[first].until(change_of(order_id, "origin_rejected"))
    assert seen.decision == D.ORIGIN_DECISION_REJECTED and seen.reject_reason == "oven broken"
    arrived = watches[last].until(change_of(order_id, "origin_rerouted"))
    assert arrived.decision == D.ORIGIN_DECISION_PENDING and arrived.origin_id == last
    # The first origin is done with it.
    code, message = error_of(lambda: accept(kitchens[first], order_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "rejected" in message

    customer = subscribe(dispatch.settings.redis_url, topics.order_channel(order_id))
    ended = reject(kitchens[last], order_id, "closing early")
    assert ended.decision == D.ORIGIN_DECISION_REJECTED
    assert ended.status == common_pb2.ORDER_STATUS_CANCELLED
    final = events(staff, order_id)[-1]
    assert (final.event_type, final.to_status) == ("origin_rejected", ended.status)
    assert json.loads(final.details_json)["reason"] == "origin_rejected"
    message = wait_until(lambda: customer.get_message(timeout=0.2), 10, what="customer update")
    status = tracking_service_pb2.TrackResponse.FromString(message["data"]).status
    assert (status.status, status.detail) == (ended.status, "origin_rejected")
    assert watches[last].until(change_of(order_id, "origin_rejected")).status == ended.status
    for watch in watches.values():
        watch.close()
    # A closed origin takes no orders.
    assert code_of(lambda: staff.create(origin_id=closed)) == grpc.StatusCode.FAILED_PRECONDITION


def test_only_the_origin_and_its_tenants_staff_may_act(staff: Client, dispatch: Dispatch) -> None:
    origin_id = add_origin(staff)
    other_id = add_origin(staff)
    order_id = staff.create(origin_id=origin_id).order.order_id
    other = origin_client(dispatch, staff.tenant, other_id)
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert Watch(other, origin_id).error()[0] == denied
    for call in (
        lambda: accept(other, order_id),
        lambda: reject(other, order_id),
        lambda: mark_ready(other, order_id),
        lambda: set_preparation(other, order_id, minutes(1)),
        lambda: other.origins.GetOrigin(
            opb.GetOriginRequest(origin_id=origin_id), metadata=other.md
        ),
    ):
        assert code_of(call) == denied
    driver = Client(dispatch, staff.tenant, Role.DRIVER, "drv-1")
    assert code_of(lambda: accept(driver, order_id)) == denied
    # Another tenant sees neither the origin nor the order.
    stranger = Client(dispatch, new_tenant())
    assert Watch(stranger, origin_id).error()[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: accept(stranger, order_id)) == grpc.StatusCode.NOT_FOUND
    anonymous = opb.AcceptOrderRequest(order_id=order_id)
    assert code_of(lambda: staff.origins.AcceptOrder(anonymous)) == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was decided by any of that.
    assert [e.event_type for e in events(staff, order_id)] == ["created"]


def test_bad_inputs_get_clear_statuses_and_lose_nothing(staff: Client, dispatch: Dispatch) -> None:
    origin_id = add_origin(staff)
    kitchen = origin_client(dispatch, staff.tenant, origin_id)
    order_id = staff.create(origin_id=origin_id).order.order_id
    invalid, failed = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION

    def status(call: Any) -> tuple[grpc.StatusCode, str]:
        return error_of(call)

    assert status(lambda: mark_ready(kitchen, order_id)) == (
        failed,
        "cannot mark ready: accept the order first (AcceptOrder)",
    )
    assert status(lambda: set_preparation(kitchen, order_id, minutes(5)))[0] == failed
    assert status(lambda: accept(kitchen, order_id, minutes(-1)))[0] == invalid
    assert status(lambda: accept(kitchen, order_id, minutes(60 * 24 * 10)))[0] == invalid
    assert status(lambda: reject(kitchen, order_id, "  "))[0] == invalid
    assert status(lambda: accept(kitchen, ""))[0] == invalid
    assert status(lambda: accept(staff, "ord_missing"))[0] == grpc.StatusCode.NOT_FOUND
    assert Watch(kitchen, after_cursor="yesterday").error()[0] == invalid
    assert Watch(staff, "org-missing").error()[0] == grpc.StatusCode.NOT_FOUND
    assert Watch(staff).error()[0] == invalid  # staff must name the origin
    odd = origin_pb2.Origin(origin_id="org-odd", name="Odd", kind=undefined_enum(9))
    odd.address.location.lat, odd.address.location.lng = HAMRUN
    upsert = opb.UpsertOriginRequest(origin=odd)
    assert status(lambda: staff.origins.UpsertOrigin(upsert, metadata=staff.md)) == (
        invalid,
        "origin.kind: 9 is not a OriginKind",
    )

    accepted = accept(kitchen, order_id, minutes(10))
    assert status(lambda: set_preparation(kitchen, order_id, minutes(-5)))[0] == invalid
    request = opb.SetPreparationTimeRequest(order_id=order_id)  # no preparation
    assert code_of(lambda: kitchen.origins.SetPreparationTime(request, metadata=kitchen.md)) == (
        invalid
    )
    code, message = status(lambda: reject(kitchen, order_id))
    assert code == failed and "ACCEPTED" in message
    # The refused calls changed nothing.
    assert mark_ready(kitchen, order_id).preparation == accepted.preparation

    without_origin = staff.create().order.order_id
    assert status(lambda: accept(staff, without_origin))[0] == failed
    cancelled = staff.create(origin_id=origin_id).order.order_id
    staff.orders.CancelOrder(pb.CancelOrderRequest(order_id=cancelled), metadata=staff.md)
    code, message = status(lambda: accept(kitchen, cancelled))
    assert code == failed and "CANCELLED" in message

    itself = code_of(lambda: add_origin(staff, origin_id, fallbacks=(origin_id,)))
    unknown = code_of(lambda: add_origin(staff, origin_id, fallbacks=("org-unknown",)))
    assert (itself, unknown) == (invalid, failed)
    assert code_of(lambda: add_origin(staff, preparation_s=-60)) == invalid
