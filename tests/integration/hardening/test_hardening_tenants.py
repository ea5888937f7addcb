"""Tenant isolation of the dispatcher RPCs of dispatch and pod: a dispatcher of tenant B
neither reads nor changes tenant A's orders, drivers, areas, routes, tracking links or proofs,
and gets the same NOT_FOUND for them as for ids that do not exist (nothing leaks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2, dispatch_service_pb2, order_service_pb2
from lastmile.pod.v1 import pod_service_pb2

from tests.integration.hardening.conftest import Hardened
from tests.integration.hardening.support import TIMEOUT_S, Tenant, status_of

pytestmark = pytest.mark.integration
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# Gozo, far from the test orders: the area changes no split decision.
GOZO = [(36.03, 14.20), (36.03, 14.30), (36.08, 14.30), (36.08, 14.20)]


@dataclass
class World:
    """Tenant A's objects and both tenants' staff."""

    a: Tenant
    b: Tenant
    order_id: str
    token: str
    driver_id: str
    area_id: str


@pytest.fixture(scope="module")
def world(hardened: Hardened) -> Iterator[World]:
    a, b = Tenant(hardened), Tenant(hardened)
    driver_id = a.driver()
    created = a.create()
    a.assign(created.order.order_id, driver_id)
    area = dispatch_pb2.Area(name="Gozo", rules=[_internal_rule()])
    area.boundary.vertices.extend(common_pb2.LatLng(lat=lat, lng=lng) for lat, lng in GOZO)
    stored = a.admin.UpsertArea(
        dispatch_service_pb2.UpsertAreaRequest(area=area), metadata=a.md, timeout=TIMEOUT_S
    ).area
    yield World(
        a, b, created.order.order_id, created.order.tracking_token, driver_id, stored.area_id
    )
    a.close()
    b.close()


def _internal_rule() -> dispatch_pb2.ProviderRule:
    return dispatch_pb2.ProviderRule(
        priority=1, fleet=dispatch_pb2.FLEET_KIND_INTERNAL, share_percent=100
    )


def _same_as_missing(call: Any, request_of: Any, real_id: str) -> None:
    """The call fails for A's id exactly as for an id that does not exist (code and message,
    the id aside)."""
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    code, message = status_of(lambda: call(request_of(real_id)))
    missing_code, missing_message = status_of(lambda: call(request_of(missing)))
    assert (code, message.replace(real_id, "ID")) == (
        missing_code,
        missing_message.replace(missing, "ID"),
    )
    assert code == NOT_FOUND, (code, message)


def test_orders_of_another_tenant_look_absent(world: World) -> None:
    a, b, order_id = world.a, world.b, world.order_id
    md: dict[str, Any] = {"metadata": b.md, "timeout": TIMEOUT_S}
    for call, request_of in (
        (b.orders.GetOrder, lambda i: order_service_pb2.GetOrderRequest(order_id=i)),
        (b.orders.ListOrderEvents, lambda i: order_service_pb2.ListOrderEventsRequest(order_id=i)),
        (b.orders.CancelOrder, lambda i: order_service_pb2.CancelOrderRequest(order_id=i)),
        (
            b.orders.UpdateInstructions,
            lambda i: order_service_pb2.UpdateInstructionsRequest(order_id=i),
        ),
        (
            b.orders.RevokeTrackingToken,
            lambda i: order_service_pb2.RevokeTrackingTokenRequest(order_id=i),
        ),
        (
            b.admin.AssignOrder,
            lambda i: dispatch_service_pb2.AssignOrderRequest(order_id=i, driver_id="x"),
        ),
    ):
        _same_as_missing(lambda r, c=call: c(r, **md), request_of, order_id)
    listed = b.orders.ListOrders(order_service_pb2.ListOrdersRequest(page_size=500), **md)
    assert order_id not in {o.order_id for o in listed.orders}
    # Nothing changed: A's order is still assigned, its link still works.
    assert a.status(order_id) == common_pb2.ORDER_STATUS_ASSIGNED
    assert a.get_tracking(world.token).snapshot.status == common_pb2.ORDER_STATUS_ASSIGNED


def test_drivers_routes_and_areas_of_another_tenant_look_absent(world: World) -> None:
    a, b = world.a, world.b
    md: dict[str, Any] = {"metadata": b.md, "timeout": TIMEOUT_S}
    own_order = b.create().order.order_id
    # B cannot give its order to A's driver, nor read A's driver's route.
    _same_as_missing(
        lambda r: b.admin.AssignOrder(r, **md),
        lambda i: dispatch_service_pb2.AssignOrderRequest(order_id=own_order, driver_id=i),
        world.driver_id,
    )
    _same_as_missing(
        lambda r: b.admin.GetRoute(r, **md),
        lambda i: dispatch_service_pb2.GetRouteRequest(driver_id=i),
        world.driver_id,
    )
    for call, request_of in (
        (b.admin.GetArea, lambda i: dispatch_service_pb2.GetAreaRequest(area_id=i)),
        (b.admin.DeleteArea, lambda i: dispatch_service_pb2.DeleteAreaRequest(area_id=i)),
    ):
        _same_as_missing(lambda r, c=call: c(r, **md), request_of, world.area_id)
    drivers = b.admin.ListDrivers(dispatch_service_pb2.ListDriversRequest(page_size=500), **md)
    assert world.driver_id not in {d.driver_id for d in drivers.drivers}
    areas = b.admin.ListAreas(dispatch_service_pb2.ListAreasRequest(), **md)
    assert world.area_id not in {x.area_id for x in areas.areas}
    # Ids are global: taking A's ids is refused, and A's objects stay as they were.
    taken = dispatch_pb2.Driver(driver_id=world.driver_id, name="Impostor", active=False)
    code, _ = status_of(
        lambda: b.admin.UpsertDriver(dispatch_service_pb2.UpsertDriverRequest(driver=taken), **md)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    area = dispatch_pb2.Area(area_id=world.area_id, name="Hijacked", rules=[_internal_rule()])
    area.boundary.vertices.extend(common_pb2.LatLng(lat=lat, lng=lng) for lat, lng in GOZO)
    code, _ = status_of(
        lambda: b.admin.UpsertArea(dispatch_service_pb2.UpsertAreaRequest(area=area), **md)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    mine = a.admin.GetArea(
        dispatch_service_pb2.GetAreaRequest(area_id=world.area_id), metadata=a.md
    ).area
    assert mine.name == "Gozo"
    a_drivers = a.admin.ListDrivers(dispatch_service_pb2.ListDriversRequest(), metadata=a.md)
    assert {d.name for d in a_drivers.drivers if d.driver_id == world.driver_id} == {"Maria Borg"}


def test_planning_and_providers_of_another_tenant_look_absent(world: World) -> None:
    a, b = world.a, world.b
    md: dict[str, Any] = {"metadata": b.md, "timeout": TIMEOUT_S}
    route_id = a.admin.GetRoute(
        dispatch_service_pb2.GetRouteRequest(driver_id=world.driver_id), metadata=a.md
    ).route.route_id
    own_driver = dispatch_pb2.Driver(
        driver_id=f"plan-{uuid.uuid4().hex[:8]}", name="B", active=True, depot=_latlng(GOZO[0])
    )
    b.admin.UpsertDriver(dispatch_service_pb2.UpsertDriverRequest(driver=own_driver), **md)
    own_order = b.create().order.order_id
    _same_as_missing(
        lambda r: b.admin.PlanWave(r, **md),
        lambda i: dispatch_service_pb2.PlanWaveRequest(
            order_ids=[i], driver_ids=[own_driver.driver_id]
        ),
        world.order_id,
    )
    _same_as_missing(
        lambda r: b.admin.ReoptimizeRoute(r, **md),
        lambda i: dispatch_service_pb2.ReoptimizeRouteRequest(route_id=i, order_ids=[own_order]),
        route_id,
    )
    provider = dispatch_pb2.Provider(
        provider_id=f"prov-{uuid.uuid4().hex[:8]}",
        name="Couriers",
        transport=dispatch_pb2.PROVIDER_TRANSPORT_POLLING,
        endpoint_url="http://127.0.0.1:9/",
        enabled=False,
    )
    a.admin.UpsertProvider(
        dispatch_service_pb2.UpsertProviderRequest(provider=provider), metadata=a.md
    )
    listed = b.admin.ListProviders(dispatch_service_pb2.ListProvidersRequest(), **md)
    assert provider.provider_id not in {p.provider_id for p in listed.providers}
    assert a.status(world.order_id) == common_pb2.ORDER_STATUS_ASSIGNED  # not planned by B


def _latlng(point: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=point[0], lng=point[1])


def _first_event(tenant: Tenant, request: order_service_pb2.WatchOrdersRequest) -> Any:
    """The first event WatchOrders sends ``tenant`` for ``request`` (a replay: no race)."""
    call = tenant.orders.WatchOrders(request, metadata=tenant.md, timeout=TIMEOUT_S)
    try:
        return next(iter(call)).event
    finally:
        call.cancel()  # type: ignore[no-untyped-call]


def test_watch_orders_never_carries_another_tenants_events(world: World) -> None:
    a, b = world.a, world.b
    before = b.create().order.order_id
    cursor = _first_event(
        b, order_service_pb2.WatchOrdersRequest(order_ids=[before], after_cursor="0-0")
    ).cursor
    a.create()  # A's event comes after the cursor, before B's next one
    after = b.create().order.order_id
    replayed = _first_event(b, order_service_pb2.WatchOrdersRequest(after_cursor=cursor))
    assert replayed.order_id == after, replayed


def test_proofs_of_another_tenant_look_absent(world: World) -> None:
    b = world.b
    md: dict[str, Any] = {"metadata": b.md, "timeout": TIMEOUT_S}
    _same_as_missing(
        lambda r: b.pod.GetProof(r, **md),
        lambda i: pod_service_pb2.GetProofRequest(order_id=i),
        world.order_id,
    )
    flagged = b.pod.ListFlaggedProofs(pod_service_pb2.ListFlaggedProofsRequest(), **md)
    assert all(p.order_id != world.order_id for p in flagged.proofs)
