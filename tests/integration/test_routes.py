"""Route RPCs end to end: PlanWave, GetRoute and ReoptimizeRoute on a real dispatch process
with real PostgreSQL, Redis and the real road graph. RouteUpdates are observed on the
drivers' command channels, assignments through the order API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dps

from core import topics
from ops.servers import PostgresServer, RedisServer
from tests.conftest import RedisDatabases
from tests.helpers import wait_until
from tests.integration.orders_support import (
    SLIEMA,
    VALLETTA,
    Client,
    Dispatch,
    code_of,
    isolated_dispatch,
    new_tenant,
    next_command,
    order,
    subscribe,
    window,
)

pytestmark = pytest.mark.integration
ONE_SECOND = Duration(seconds=1)
DROP_OFFS = [SLIEMA, (35.9186, 14.4892), (35.8970, 14.4890)]  # Sliema, St Julian's, Msida
FLORIANA = (35.8935, 14.5060)


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int, road_graph: Path
) -> Iterator[Dispatch]:
    with isolated_dispatch(
        postgres_server, redis_server.url, redis_db, graph_dir=road_graph.parent
    ) as service:
        yield service


@pytest.fixture
def client(dispatch: Dispatch) -> Iterator[Client]:
    c = Client(dispatch, new_tenant())
    yield c
    c.close()


def add_driver(client: Client) -> str:
    """An active driver of the client's tenant, based in Valletta, on shift for 8 hours."""
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    driver = dispatch_pb2.Driver(
        driver_id=driver_id, name="Route Driver", capacity_units=10, active=True
    )
    driver.depot.lat, driver.depot.lng = VALLETTA
    driver.shift.CopyFrom(window(-600, 8 * 3600))
    client.admin.UpsertDriver(dps.UpsertDriverRequest(driver=driver), metadata=client.md)
    return driver_id


def planned_order(client: Client, drop_off: tuple[float, float]) -> str:
    """A pending planned order from Valletta to ``drop_off``, due within 4 hours."""
    message = order(drop_off=drop_off, drop_window=window(1800, 4 * 3600))
    message.instructions.text = "ring twice"
    return str(client.create(message=message).order.order_id)


def plan(client: Client, driver_ids: list[str], order_ids: list[str] | None = None) -> Any:
    request = dps.PlanWaveRequest(
        driver_ids=driver_ids, order_ids=order_ids or [], time_limit=ONE_SECOND
    )
    return client.admin.PlanWave(request, metadata=client.md)


def order_ids_of(route: route_pb2.Route) -> set[str]:
    return {stop.order_id for stop in route.stops}


def test_plan_wave_assigns_orders_and_pushes_routes(client: Client, dispatch: Dispatch) -> None:
    drivers = [add_driver(client), add_driver(client)]
    orders = [planned_order(client, point) for point in DROP_OFFS]
    channels = {
        d: subscribe(dispatch.settings.redis_url, topics.driver_commands_channel(d))
        for d in drivers
    }

    response = plan(client, drivers)

    assert list(response.unassigned_order_ids) == []
    assert set().union(*(order_ids_of(r) for r in response.routes)) == set(orders)
    for route in response.routes:
        assert route.version == 1 and route.driver_id in drivers
        kinds = [(s.order_id, s.kind) for s in route.stops]
        for order_id in order_ids_of(route):
            # Every order is picked up before it is dropped off.
            assert kinds.index((order_id, route_pb2.STOP_KIND_PICKUP)) < kinds.index(
                (order_id, route_pb2.STOP_KIND_DROP_OFF)
            )
            got = client.get(order_id)
            assert got.status == common_pb2.ORDER_STATUS_ASSIGNED
            assert (got.route_id, got.driver_id) == (route.route_id, route.driver_id)
        update = next_command(channels[route.driver_id]).route_update
        assert update.route.route_id == route.route_id and update.reason == "planned"
        assert len(update.route.legs) == len(route.stops)

    route = response.routes[0]
    fetched = client.admin.GetRoute(
        dps.GetRouteRequest(driver_id=route.driver_id), metadata=client.md
    ).route
    assert fetched.route_id == route.route_id
    assert [s.stop_id for s in fetched.stops] == [s.stop_id for s in route.stops]
    assert fetched.stops[0].instructions.text == "ring twice"
    assert len(fetched.legs) == len(fetched.stops)
    # Stops at the same place (pickups at one origin) are joined by empty legs.
    assert all(len(leg.geometry) >= 2 for leg in fetched.legs if leg.distance_m > 0)
    assert any(leg.distance_m > 0 for leg in fetched.legs)
    assert any(step.maneuver_type == "depart" for step in fetched.legs[0].steps)
    assert fetched.distance_m > 0 and fetched.duration_s > 0


def test_reoptimize_keeps_the_first_stop_and_inserts_the_order(
    client: Client, dispatch: Dispatch
) -> None:
    driver_id = add_driver(client)
    first = [planned_order(client, point) for point in DROP_OFFS[:2]]
    (route,) = plan(client, [driver_id], first).routes
    commands = subscribe(dispatch.settings.redis_url, topics.driver_commands_channel(driver_id))
    added = planned_order(client, FLORIANA)

    request = dps.ReoptimizeRouteRequest(
        route_id=route.route_id, order_ids=[added], time_limit=ONE_SECOND
    )
    response = client.admin.ReoptimizeRoute(request, metadata=client.md)

    assert list(response.rejected_order_ids) == []
    new = response.route
    assert new.version == 2 and new.route_id == route.route_id
    assert new.stops[0].stop_id == route.stops[0].stop_id
    assert order_ids_of(new) == {*first, added}
    assert {s.stop_id for s in route.stops} <= {s.stop_id for s in new.stops}
    got = client.get(added)
    assert got.status == common_pb2.ORDER_STATUS_ASSIGNED and got.route_id == route.route_id
    update = next_command(commands).route_update
    assert (update.route.version, update.reason) == (2, "reoptimized")
    by_id = client.admin.GetRoute(dps.GetRouteRequest(route_id=route.route_id), metadata=client.md)
    assert by_id.route.version == 2 and len(by_id.route.stops) == 6


def test_bad_inputs_get_clear_statuses(client: Client, dispatch: Dispatch) -> None:
    driver_id = add_driver(client)
    order_id = planned_order(client, SLIEMA)
    md = client.md
    admin = client.admin

    assert code_of(
        lambda: admin.GetRoute(dps.GetRouteRequest(route_id="rte-nope"), metadata=md)
    ) == (grpc.StatusCode.NOT_FOUND)
    assert code_of(
        lambda: admin.GetRoute(dps.GetRouteRequest(driver_id=driver_id), metadata=md)
    ) == (grpc.StatusCode.NOT_FOUND)
    reopt = dps.ReoptimizeRouteRequest(route_id="rte-nope", order_ids=[order_id])
    assert code_of(lambda: admin.ReoptimizeRoute(reopt, metadata=md)) == (grpc.StatusCode.NOT_FOUND)
    assert code_of(lambda: admin.PlanWave(dps.PlanWaveRequest(driver_ids=[driver_id]))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    too_long = dps.PlanWaveRequest(driver_ids=[driver_id], time_limit=Duration(seconds=301))
    assert code_of(lambda: admin.PlanWave(too_long, metadata=md)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(lambda: plan(client, ["drv-unknown"])) == grpc.StatusCode.NOT_FOUND
    # Nothing was lost or changed by the refused calls.
    assert client.get(order_id).status == common_pb2.ORDER_STATUS_PENDING


def test_scheduled_wave_plans_due_orders_onto_free_drivers(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    redis_databases: RedisDatabases,
    road_graph: Path,
) -> None:
    # A second dispatch process next to the module's: databases of its own.
    with isolated_dispatch(
        postgres_server,
        redis_server.url,
        redis_databases.take(),
        graph_dir=road_graph.parent,
        wave_interval_s=0.5,
        wave_time_limit_s=1.0,
    ) as scheduled:
        client = Client(scheduled, new_tenant())
        try:
            driver = add_driver(client)
            due = [planned_order(client, point) for point in DROP_OFFS[:2]]
            later = order(drop_off=SLIEMA, drop_window=window(2 * 86400, 3600))
            tomorrow = str(client.create(message=later).order.order_id)

            def assigned() -> bool:
                statuses = {client.get(o).status for o in due}
                return statuses == {common_pb2.ORDER_STATUS_ASSIGNED}

            assert wait_until(assigned, timeout=60, what="the scheduled wave to assign the orders")
            routes = {client.get(o).route_id for o in due}
            assert len(routes) == 1 and {client.get(o).driver_id for o in due} == {driver}
            # An order due outside the horizon waits for a later wave.
            assert client.get(tomorrow).status == common_pb2.ORDER_STATUS_PENDING
        finally:
            client.close()


def test_plan_wave_schedules_the_drivers_break_inside_its_window(client: Client) -> None:
    driver_id = add_driver(client)
    driver = client.admin.ListDrivers(dps.ListDriversRequest(), metadata=client.md).drivers
    registered = next(d for d in driver if d.driver_id == driver_id)
    brk = registered.breaks.add(start_window=window(1200, 1200), duration=Duration(seconds=1800))
    stored = client.admin.UpsertDriver(
        dps.UpsertDriverRequest(driver=registered), metadata=client.md
    ).driver
    assert list(stored.breaks) == [brk]
    orders = [planned_order(client, point) for point in DROP_OFFS]

    route = plan(client, [driver_id]).routes[0]

    assert order_ids_of(route) - {""} == set(orders)
    breaks = [s for s in route.stops if s.kind == route_pb2.STOP_KIND_BREAK]
    assert len(breaks) == 1 and breaks[0].order_id == "" and breaks[0].service_time_s == 1800
    starts = breaks[0].planned_arrival.ToSeconds()
    assert brk.start_window.start.ToSeconds() <= starts <= brk.start_window.end.ToSeconds()
    # Whatever follows the break starts after it ends, and every drop-off keeps its window.
    after = route.stops[list(route.stops).index(breaks[0]) + 1 :]
    assert all(s.planned_arrival.ToSeconds() >= starts + 1800 for s in after)
    for stop in route.stops:
        if stop.kind == route_pb2.STOP_KIND_DROP_OFF:
            assert stop.planned_arrival.ToSeconds() <= stop.window.end.ToSeconds()
    assert len(route.legs) == len(route.stops)

    # Re-optimizing the route keeps the break (a zero-load stop with its window).
    added = planned_order(client, FLORIANA)
    request = dps.ReoptimizeRouteRequest(
        route_id=route.route_id, order_ids=[added], time_limit=ONE_SECOND
    )
    new = client.admin.ReoptimizeRoute(request, metadata=client.md).route
    assert breaks[0].stop_id in {s.stop_id for s in new.stops}
    assert order_ids_of(new) - {""} == {*orders, added}


def test_bad_breaks_are_refused(client: Client) -> None:
    driver_id = add_driver(client)
    base = dispatch_pb2.Driver(driver_id=driver_id, name="Route Driver", active=True)
    inverted = dispatch_pb2.DriverBreak(
        start_window=window(2400, -1200), duration=Duration(seconds=600)
    )
    endless = dispatch_pb2.DriverBreak(
        start_window=window(1200, 1200), duration=Duration(seconds=13 * 3600)
    )
    # Nanos beyond a second: the stored JSON could not be written (it answered INTERNAL).
    malformed = dispatch_pb2.DriverBreak(
        start_window=window(1200, 1200), duration=Duration(seconds=1, nanos=2**31 - 1)
    )
    no_window = dispatch_pb2.DriverBreak(duration=Duration(seconds=60))
    for brk in (inverted, endless, malformed, no_window):
        bad = dispatch_pb2.Driver()
        bad.CopyFrom(base)
        bad.breaks.append(brk)
        request = dps.UpsertDriverRequest(driver=bad)
        upsert = partial(client.admin.UpsertDriver, request, metadata=client.md)
        assert code_of(upsert) == grpc.StatusCode.INVALID_ARGUMENT
