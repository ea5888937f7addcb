"""Orders end to end through a real dispatch process (generated grpcio stubs), PostgreSQL and
Redis: idempotent create, paging, the state machine's refusals, the outbox relay (in order,
and across a crash), customer changes reaching the driver, failed-delivery policies."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dps
from lastmile.dispatch.v1 import order_service_pb2 as pb
from lastmile.driver.v1 import driver_pb2
from lastmile.tracking.v1 import tracking_pb2, tracking_service_pb2

from core import topics
from core.auth import Role, issue_token, tracking_token_digest
from ops.servers import PostgresServer, RedisServer
from tests.helpers import undefined_enum, wait_until
from tests.integration.orders_support import (
    Client,
    ConnectRequest,
    Dispatch,
    code_of,
    driver_event,
    error_of,
    isolated_dispatch,
    new_tenant,
    next_command,
    order,
    own_redis_db,
    picked_up_by_driver,
    register_and_assign,
    sql,
    stream_events,
    subscribe,
    window,
)

pytestmark = pytest.mark.integration
S = common_pb2


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int
) -> Iterator[Dispatch]:
    with isolated_dispatch(postgres_server, redis_server.url, redis_db) as service:
        yield service


@pytest.fixture
def client(dispatch: Dispatch) -> Iterator[Client]:
    c = Client(dispatch, new_tenant())
    yield c
    c.close()


@pytest.fixture(scope="module")
def r(redis_server: RedisServer, redis_db: int) -> redis.Redis:
    return redis.Redis.from_url(own_redis_db(redis_server.url, redis_db))


def test_create_is_idempotent_and_secrets_are_returned_once(
    client: Client, dispatch: Dispatch
) -> None:
    message = order()
    first = client.create(key="k-1", message=message)
    assert first.order.status == S.ORDER_STATUS_PENDING
    assert first.order.tracking_token and len(first.delivery_code) == 6
    assert first.split.explanation  # the rules engine always says why
    again = client.create(key="k-1", message=message)
    assert again.order.order_id == first.order.order_id
    assert again.order.tracking_token == "" and again.delivery_code == ""
    code, details = error_of(lambda: client.create(key="k-1", ref="another"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "k-1" in details
    (row,) = sql(
        dispatch.settings.database_url,
        "SELECT * FROM orders WHERE order_id = $1",
        first.order.order_id,
    )
    assert row["tracking_token_digest"] == tracking_token_digest(first.order.tracking_token)
    assert first.delivery_code not in row["delivery_code_digest"]
    assert [e.event_type for e in client.events(first.order.order_id)] == ["created"]


def test_concurrent_retries_of_one_create_make_one_order(
    client: Client, dispatch: Dispatch
) -> None:
    """A client that timed out retries while its first call is still in flight: the calls
    with the same key and body make one order; those with the key and another body are
    ALREADY_EXISTS, never INTERNAL (the unique index is what decides between them)."""
    message = order()
    other = order(ref="another body")

    def create(body: dispatch_pb2.Order) -> tuple[grpc.StatusCode, Any]:
        try:
            return grpc.StatusCode.OK, client.create(key="k-race", message=body)
        except grpc.RpcError as error:
            return error.code(), error.details()

    bodies = [message] * 8 + [other] * 4
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        outcomes = list(pool.map(create, bodies))
    replies = [reply for code, reply in outcomes if code == grpc.StatusCode.OK]
    (winner,) = {reply.order.external_ref for reply in replies}
    for body, (code, answer) in zip(bodies, outcomes, strict=True):
        won = body.external_ref == winner
        expected = grpc.StatusCode.OK if won else grpc.StatusCode.ALREADY_EXISTS
        assert code == expected, (body.external_ref, code, answer)
    assert len({reply.order.order_id for reply in replies}) == 1
    # The secrets go to the one call that created the order.
    assert sum(1 for reply in replies if reply.order.tracking_token) == 1
    rows = sql(
        dispatch.settings.database_url,
        "SELECT order_id FROM orders WHERE tenant_id = $1 AND idempotency_key = $2",
        client.tenant,
        "k-race",
    )
    assert len(rows) == 1, rows


def test_bad_inputs_get_clear_statuses(client: Client, dispatch: Dispatch) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    request = pb.CreateOrderRequest(order=order())
    assert code_of(lambda: client.orders.CreateOrder(request, metadata=client.md)) == invalid
    assert code_of(lambda: client.create(drop_off=(95.0, 14.5))) == invalid
    assert code_of(lambda: client.create(drop_window=window(-7200))) == invalid
    backwards = window(3600)
    backwards.end.CopyFrom(backwards.start)
    assert code_of(lambda: client.create(drop_window=backwards)) == invalid
    missing = pb.GetOrderRequest(order_id="ord_nope")
    assert code_of(lambda: client.orders.GetOrder(missing, metadata=client.md)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(lambda: client.orders.GetOrder(missing)) == grpc.StatusCode.UNAUTHENTICATED
    driver = Client(dispatch, client.tenant, Role.DRIVER, "drv-x")
    assert code_of(lambda: driver.orders.GetOrder(missing, metadata=driver.md)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    paging = pb.ListOrdersRequest(page_token="not-a-token")
    assert code_of(lambda: client.orders.ListOrders(paging, metadata=client.md)) == invalid
    # A status number the contract does not define (protobuf keeps it) is named, not INTERNAL.
    unknown = pb.ListOrdersRequest(statuses=[S.ORDER_STATUS_PENDING, undefined_enum(32768)])
    assert error_of(lambda: client.orders.ListOrders(unknown, metadata=client.md)) == (
        invalid,
        "statuses: 32768 is not a OrderStatus",
    )
    # Another tenant's order looks absent.
    mine = client.create()
    other = Client(dispatch, "tenant-other")
    found = pb.GetOrderRequest(order_id=mine.order.order_id)
    assert code_of(lambda: other.orders.GetOrder(found, metadata=other.md)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_list_pages_newest_first_with_filters(client: Client) -> None:
    created = [client.create(ref=f"r{i}").order.order_id for i in range(5)]
    client.orders.CancelOrder(pb.CancelOrderRequest(order_id=created[0]), metadata=client.md)
    seen: list[str] = []
    token = ""
    while True:
        page = client.orders.ListOrders(
            pb.ListOrdersRequest(page_size=2, page_token=token), metadata=client.md
        )
        assert len(page.orders) <= 2
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == created[::-1]
    cancelled = client.orders.ListOrders(
        pb.ListOrdersRequest(statuses=[S.ORDER_STATUS_CANCELLED]), metadata=client.md
    )
    assert [o.order_id for o in cancelled.orders] == [created[0]]


def test_illegal_transitions_are_failed_precondition(client: Client) -> None:
    order_id = client.create().order.order_id
    cancel = pb.CancelOrderRequest(order_id=order_id, reason="customer asked")
    assert client.orders.CancelOrder(cancel, metadata=client.md).order.status == (
        S.ORDER_STATUS_CANCELLED
    )
    code, message = error_of(lambda: client.orders.CancelOrder(cancel, metadata=client.md))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "CANCELLED" in message
    fresh = client.create().order.order_id
    failed = pb.ReportFailedAttemptRequest(order_id=fresh, reason=S.FAILURE_REASON_NOT_HOME)
    code, message = error_of(lambda: client.orders.ReportFailedAttempt(failed, metadata=client.md))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "PENDING" in message and "FAILED" in message


def test_outbox_is_relayed_in_order_and_watch_resumes(client: Client, r: redis.Redis) -> None:
    order_id = client.create().order.order_id
    client.orders.CancelOrder(pb.CancelOrderRequest(order_id=order_id), metadata=client.md)
    relayed = wait_until(lambda: _relayed(r, order_id, 2), 10)
    assert [e.sequence for _, e in relayed] == [1, 2]
    assert [e.event_type for _, e in relayed] == ["created", "cancelled"]
    # Resume after the first event: the second one is replayed first.
    watch = client.orders.WatchOrders(
        pb.WatchOrdersRequest(order_ids=[order_id], after_cursor=relayed[0][0]),
        metadata=client.md,
    )
    replayed = next(iter(watch)).event
    watch.cancel()  # type: ignore[no-untyped-call]
    assert replayed.sequence == 2 and replayed.cursor == relayed[1][0]


def _relayed(r: redis.Redis, order_id: str, count: int) -> list[tuple[str, Any]]:
    found = stream_events(r, order_id)
    return found if len(found) == count else []


def test_crash_between_write_and_publish_loses_nothing(
    client: Client, dispatch: Dispatch, r: redis.Redis
) -> None:
    dispatch.restart(outbox_relay_enabled=False)
    try:
        order_id = client.create().order.order_id
        dispatch.crash()
        rows = sql(
            dispatch.settings.database_url,
            "SELECT published_at FROM outbox WHERE key = $1",
            order_id,
        )
        assert [row["published_at"] for row in rows] == [None]
        assert stream_events(r, order_id) == []
    finally:
        dispatch.start()
    relayed = wait_until(lambda: stream_events(r, order_id), 15, what="event relayed")
    assert [e.event_type for _, e in relayed] == ["created"]


def test_instruction_change_reaches_the_assigned_driver(client: Client, dispatch: Dispatch) -> None:
    created = client.create()
    order_id, token = created.order.order_id, created.order.tracking_token
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    register_and_assign(client, dispatch.settings.database_url, order_id, driver_id)
    live = subscribe(dispatch.settings.redis_url, topics.driver_commands_channel(driver_id))
    instructions = S.DeliveryInstructions(
        text="Gate code 4321, leave with neighbour at no. 5",
        preference=S.DROP_OFF_PREFERENCE_WITH_NEIGHBOUR,
        access_code="4321",
    )
    update = pb.UpdateInstructionsRequest(
        order_id=order_id, instructions=instructions, tracking_token=token
    )
    assert client.orders.UpdateInstructions(update).order.instructions == instructions
    command = next_command(live)
    assert command.instruction_change.order_id == order_id
    assert command.instruction_change.instructions.access_code == "4321"
    # Then the route holding the order, as its next version with the new instructions.
    route = next_command(live).route_update
    assert (route.reason, route.route.version) == ("instructions", 2)
    assert route.route.stops[-1].instructions == instructions
    # A customer reschedules: the driver gets the new window, and the route without the order.
    new_window = window(2 * 86400)
    move = pb.RescheduleOrderRequest(
        order_id=order_id, drop_off_window=new_window, tracking_token=token
    )
    assert client.orders.RescheduleOrder(move).order.status == S.ORDER_STATUS_RESCHEDULED
    assert next_command(live).instruction_change.window == new_window
    route = next_command(live).route_update
    assert (route.reason, route.route.version, list(route.route.stops)) == ("rescheduled", 3, [])
    live.close()


def test_customer_changes_refused_clearly(client: Client, dispatch: Dispatch) -> None:
    created = client.create()
    order_id, token = created.order.order_id, created.order.tracking_token
    text = S.DeliveryInstructions(text="ring twice")
    wrong = pb.UpdateInstructionsRequest(order_id=order_id, instructions=text, tracking_token="x")
    assert code_of(lambda: client.orders.UpdateInstructions(wrong)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # An unknown order answers the same to a token holder: existence does not leak.
    unknown = pb.UpdateInstructionsRequest(
        order_id="ord_x", instructions=text, tracking_token=token
    )
    assert code_of(lambda: client.orders.UpdateInstructions(unknown)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    anonymous = pb.UpdateInstructionsRequest(order_id=order_id, instructions=text)
    assert code_of(lambda: client.orders.UpdateInstructions(anonymous)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    past = pb.RescheduleOrderRequest(
        order_id=order_id, drop_off_window=window(-7200), tracking_token=token
    )
    assert code_of(lambda: client.orders.RescheduleOrder(past)) == grpc.StatusCode.INVALID_ARGUMENT
    far = pb.RescheduleOrderRequest(
        order_id=order_id, drop_off_window=window(60 * 86400), tracking_token=token
    )
    code, message = error_of(lambda: client.orders.RescheduleOrder(far))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not available" in message
    client.orders.CancelOrder(pb.CancelOrderRequest(order_id=order_id), metadata=client.md)
    late = pb.UpdateInstructionsRequest(order_id=order_id, instructions=text, tracking_token=token)
    code, message = error_of(lambda: client.orders.UpdateInstructions(late))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "CANCELLED" in message


@pytest.mark.parametrize(
    ("reason", "policy", "status"),
    [
        (S.FAILURE_REASON_NOT_HOME, pb.FAILURE_POLICY_REATTEMPT, S.ORDER_STATUS_PICKED_UP),
        (S.FAILURE_REASON_ACCESS_PROBLEM, pb.FAILURE_POLICY_RESCHEDULE, S.ORDER_STATUS_RESCHEDULED),
        (S.FAILURE_REASON_REFUSED, pb.FAILURE_POLICY_RETURN_TO_ORIGIN, S.ORDER_STATUS_RETURNED),
    ],
)
def test_failed_delivery_policies(
    client: Client, dispatch: Dispatch, r: redis.Redis, reason: Any, policy: int, status: int
) -> None:
    order_id, _ = picked_up_by_driver(client, dispatch, r)
    before = client.get(order_id)
    customer = subscribe(dispatch.settings.redis_url, topics.order_channel(order_id))
    request = pb.ReportFailedAttemptRequest(
        order_id=order_id, reason=reason, note="nobody answered", photo_key="evidence/1.jpg"
    )
    request.position.lat, request.position.lng = 35.9122, 14.5042
    reply = client.orders.ReportFailedAttempt(request, metadata=client.md)
    assert reply.applied_policy == policy
    assert reply.order.status == status
    assert reply.order.last_failure_reason == reason
    if policy != pb.FAILURE_POLICY_RETURN_TO_ORIGIN:
        assert reply.order.attempt == before.attempt + 1
    if policy == pb.FAILURE_POLICY_RESCHEDULE:
        moved = (
            reply.order.drop_off_window.start.ToDatetime()
            - before.drop_off_window.start.ToDatetime()
        )
        assert moved == dt.timedelta(seconds=dispatch.settings.failed_reschedule_shift_s)
    events = client.events(order_id)
    failed = next(e for e in events if e.event_type == "attempt_failed")
    evidence = json.loads(failed.details_json)
    assert evidence["photo_key"] == "evidence/1.jpg" and evidence["position"] == [35.9122, 14.5042]
    assert events[-1].to_status == status
    # The customer's tracking channel hears of the failure, with its reason.
    entries: list[Any] = []
    while not any(e.status.status == S.ORDER_STATUS_FAILED for e in entries):
        message = wait_until(lambda: customer.get_message(timeout=0.2), 10, what="status entry")
        entries.append(tracking_service_pb2.TrackResponse.FromString(message["data"]))
    failed_entry = next(e for e in entries if e.status.status == S.ORDER_STATUS_FAILED)
    assert failed_entry.status.failure_reason == reason
    customer.close()


@pytest.mark.parametrize(
    ("lat", "lng"), [(math.nan, 14.5), (35.9, math.inf), (91.0, 14.5), (35.9, -180.5)]
)
def test_a_failed_attempt_at_a_bad_position_is_refused_and_changes_nothing(
    client: Client, dispatch: Dispatch, r: redis.Redis, lat: float, lng: float
) -> None:
    order_id, _ = picked_up_by_driver(client, dispatch, r)
    request = pb.ReportFailedAttemptRequest(order_id=order_id, reason=S.FAILURE_REASON_NOT_HOME)
    request.position.lat, request.position.lng = lat, lng
    code, message = error_of(lambda: client.orders.ReportFailedAttempt(request, metadata=client.md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "position" in message
    assert client.get(order_id).status == S.ORDER_STATUS_PICKED_UP


def test_max_attempts_then_return(client: Client, dispatch: Dispatch, r: redis.Redis) -> None:
    order_id, _ = picked_up_by_driver(client, dispatch, r)
    request = pb.ReportFailedAttemptRequest(order_id=order_id, reason=S.FAILURE_REASON_NOT_HOME)
    policies = [
        client.orders.ReportFailedAttempt(request, metadata=client.md).applied_policy
        for _ in range(dispatch.settings.max_delivery_attempts)
    ]
    assert policies[-1] == pb.FAILURE_POLICY_RETURN_TO_ORIGIN
    assert set(policies[:-1]) == {pb.FAILURE_POLICY_REATTEMPT}
    assert client.get(order_id).status == S.ORDER_STATUS_RETURNED


def test_driver_failed_attempt_on_the_bus_applies_once(
    client: Client, dispatch: Dispatch, r: redis.Redis
) -> None:
    order_id, driver_id = picked_up_by_driver(client, dispatch, r)
    failed = driver_pb2.FailedAttempt(order_id=order_id, reason=S.FAILURE_REASON_NOT_HOME)
    for _ in range(2):  # the same event delivered twice (a gateway retry)
        driver_event(r, driver_id, 3, ConnectRequest(seq=3, failed_attempt=failed))
    # A later event from the same driver shows both copies were processed.
    arrived = driver_pb2.StopEvent(order_id=order_id, kind=driver_pb2.STOP_EVENT_KIND_ARRIVED)
    driver_event(r, driver_id, 4, ConnectRequest(seq=4, stop=arrived))
    wait_until(lambda: client.get(order_id).status == S.ORDER_STATUS_NEARBY, 10)
    types = [e.event_type for e in client.events(order_id)]
    assert types.count("attempt_failed") == 1
    assert client.get(order_id).attempt == 2


def test_the_drivers_time_of_a_stop_or_failed_attempt_is_kept_in_the_history(
    client: Client, dispatch: Dispatch, r: redis.Redis
) -> None:
    """An app that was offline sends its events late: the history records when they arrived
    and, as ``reported_at``, when the driver acted."""
    order_id, driver_id = picked_up_by_driver(client, dispatch, r)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    failed = driver_pb2.FailedAttempt(order_id=order_id, reason=S.FAILURE_REASON_NOT_HOME)
    failed.at.FromDatetime(now - dt.timedelta(seconds=90))
    arrived = driver_pb2.StopEvent(order_id=order_id, kind=driver_pb2.STOP_EVENT_KIND_ARRIVED)
    arrived.at.FromDatetime(now - dt.timedelta(seconds=30))
    driver_event(r, driver_id, 3, ConnectRequest(seq=3, failed_attempt=failed))
    driver_event(r, driver_id, 4, ConnectRequest(seq=4, stop=arrived))
    wait_until(lambda: client.get(order_id).status == S.ORDER_STATUS_NEARBY, 10)
    events = client.events(order_id)
    attempt = next(e for e in events if e.event_type == "attempt_failed")
    nearby = next(e for e in events if e.to_status == S.ORDER_STATUS_NEARBY)
    assert json.loads(attempt.details_json)["reported_at"] == failed.at.ToJsonString()
    assert json.loads(nearby.details_json)["reported_at"] == arrived.at.ToJsonString()
    assert attempt.at.ToDatetime(dt.UTC) > now - dt.timedelta(seconds=10)
    # Events without a time record none.
    picked = next(e for e in events if e.to_status == S.ORDER_STATUS_PICKED_UP)
    assert "reported_at" not in json.loads(picked.details_json)


def test_geofence_entries_move_the_order_and_watch_follows_live(
    client: Client, dispatch: Dispatch, r: redis.Redis
) -> None:
    order_id = client.create().order.order_id
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    register_and_assign(client, dispatch.settings.database_url, order_id, driver_id)
    # The driver set off (the matcher's part); the fences are the fleet engineer's rows.
    sql(
        dispatch.settings.database_url,
        "UPDATE orders SET status = $2 WHERE order_id = $1",
        order_id,
        S.ORDER_STATUS_TO_PICKUP,
    )
    fences = {
        "pickup": tracking_pb2.GEOFENCE_PURPOSE_PICKUP,
        "near": tracking_pb2.GEOFENCE_PURPOSE_NEARBY,
    }
    for name, purpose in fences.items():
        sql(
            dispatch.settings.database_url,
            "INSERT INTO geofences (geofence_id, tenant_id, shape, order_id, purpose)"
            " VALUES ($1, $2, '{}', $3, $4)",
            f"{order_id}-{name}",
            client.tenant,
            order_id,
            purpose,
        )
    relayed = wait_until(lambda: stream_events(r, order_id), 10)
    watch = client.orders.WatchOrders(
        pb.WatchOrdersRequest(order_ids=[order_id], after_cursor=relayed[-1][0]),
        metadata=client.md,
    )
    live = iter(watch)

    def enter(name: str) -> None:
        event = tracking_pb2.GeofenceEvent(
            geofence_id=f"{order_id}-{name}",
            driver_id=driver_id,
            kind=tracking_pb2.GEOFENCE_EVENT_KIND_ENTER,
            order_id=order_id,
        )
        r.xadd(topics.GEOFENCE_EVENTS, {"data": event.SerializeToString()})

    enter("near")  # not picked up yet: ignored
    enter("pickup")
    assert next(live).event.to_status == S.ORDER_STATUS_AT_PICKUP
    picked = driver_pb2.StopEvent(order_id=order_id, kind=driver_pb2.STOP_EVENT_KIND_PICKED_UP)
    driver_event(r, driver_id, 1, ConnectRequest(seq=1, stop=picked))
    assert next(live).event.to_status == S.ORDER_STATUS_PICKED_UP
    enter("pickup")  # a replayed entry: harmless
    enter("near")
    assert next(live).event.to_status == S.ORDER_STATUS_NEARBY
    watch.cancel()  # type: ignore[no-untyped-call]
    steps = [e.to_status for e in client.events(order_id) if e.from_status != e.to_status]
    assert steps[-3:] == [S.ORDER_STATUS_AT_PICKUP, S.ORDER_STATUS_PICKED_UP, S.ORDER_STATUS_NEARBY]


def _driver(client: Client, active: bool = True) -> str:
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    driver = dispatch_pb2.Driver(driver_id=driver_id, name="Assignee", active=active)
    client.admin.UpsertDriver(dps.UpsertDriverRequest(driver=driver), metadata=client.md)
    return driver_id


def test_assign_and_reassign_an_order(client: Client, dispatch: Dispatch) -> None:
    order_id = client.create().order.order_id
    first, second = _driver(client), _driver(client)
    assign = dps.AssignOrderRequest(order_id=order_id, driver_id=first, reason="closest")
    assigned = client.admin.AssignOrder(assign, metadata=client.md).order
    assert (assigned.status, assigned.driver_id) == (S.ORDER_STATUS_ASSIGNED, first)
    # Asking again changes nothing.
    assert client.admin.AssignOrder(assign, metadata=client.md).order == assigned
    live = subscribe(dispatch.settings.redis_url, topics.driver_commands_channel(first))
    again = dps.AssignOrderRequest(order_id=order_id, driver_id=second, reason="shift ended")
    moved = client.admin.AssignOrder(again, metadata=client.md).order
    assert (moved.status, moved.driver_id) == (S.ORDER_STATUS_ASSIGNED, second)
    withdrawn = next_command(live)
    assert withdrawn.order_cancelled.order_id == order_id
    assert withdrawn.order_cancelled.reason == "reassigned"
    live.close()
    history = [(e.event_type, e.to_status) for e in client.events(order_id)]
    assert history == [
        ("created", S.ORDER_STATUS_PENDING),
        ("assigned", S.ORDER_STATUS_ASSIGNED),
        ("unassigned", S.ORDER_STATUS_PENDING),
        ("assigned", S.ORDER_STATUS_ASSIGNED),
    ]


def test_concurrent_assignments_leave_the_order_with_one_driver(
    client: Client, dispatch: Dispatch
) -> None:
    """Dispatchers assigning one order to different drivers at the same moment: each call
    either wins (a reassignment of the one before) or is refused with a status; at the end the
    order is on the route of its driver only, and its history pairs every unassignment with an
    assignment."""
    order_id = client.create().order.order_id
    drivers = [_driver(client) for _ in range(6)]

    def assign(driver_id: str) -> grpc.StatusCode:
        request = dps.AssignOrderRequest(order_id=order_id, driver_id=driver_id)
        try:
            client.admin.AssignOrder(request, metadata=client.md)
        except grpc.RpcError as error:
            assert error.details(), error
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=len(drivers)) as pool:
        codes = list(pool.map(assign, drivers))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}, codes
    assert grpc.StatusCode.OK in codes
    final = client.get(order_id)
    assert final.status == S.ORDER_STATUS_ASSIGNED and final.driver_id in drivers
    on_routes = sql(
        dispatch.settings.database_url,
        "SELECT DISTINCT r.driver_id FROM route_stops s JOIN routes r USING (route_id)"
        " WHERE s.order_id = $1",
        order_id,
    )
    assert [row["driver_id"] for row in on_routes] == [final.driver_id]
    kinds = [e.event_type for e in client.events(order_id)]
    assert kinds.count("assigned") == kinds.count("unassigned") + 1, kinds
    assert kinds.count("assigned") == codes.count(grpc.StatusCode.OK), (kinds, codes)


def test_assign_refusals(client: Client, dispatch: Dispatch) -> None:
    order_id = client.create().order.order_id

    def assign(driver_id: str, md: Any = client.md) -> Any:
        request = dps.AssignOrderRequest(order_id=order_id, driver_id=driver_id)
        return client.admin.AssignOrder(request, metadata=md)

    assert code_of(lambda: assign("drv-nobody")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: assign(_driver(client, active=False))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: assign("")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: assign(_driver(client), md=())) == grpc.StatusCode.UNAUTHENTICATED
    driver_token = issue_token(dispatch.settings, "drv-x", Role.DRIVER, client.tenant)
    as_driver = (("authorization", f"Bearer {driver_token}"),)
    assert code_of(lambda: assign(_driver(client), md=as_driver)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    other_tenant = Client(dispatch, new_tenant())
    try:
        request = dps.AssignOrderRequest(order_id=order_id, driver_id=_driver(other_tenant))
        code = code_of(lambda: other_tenant.admin.AssignOrder(request, metadata=other_tenant.md))
        assert code == grpc.StatusCode.NOT_FOUND
    finally:
        other_tenant.close()
    # Once picked up, the order stays with its driver.
    sql(
        dispatch.settings.database_url,
        "UPDATE orders SET status = $2 WHERE order_id = $1",
        order_id,
        S.ORDER_STATUS_PICKED_UP,
    )
    assert code_of(lambda: assign(_driver(client))) == grpc.StatusCode.FAILED_PRECONDITION
