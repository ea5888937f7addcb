"""Set-up shared by the end-to-end tests: drivers online through the gateway, planned orders
and waves through dispatch, fences through tracking, a photo proof through pod, and an edge
whose customer Track route is broken on purpose."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.dispatch.v1 import (
    dispatch_pb2,
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.pod.v1 import pod_service_pb2_grpc
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc, tracking_pb2

from core.geo import LatLng
from ops.servers import EnvoyServer, free_port
from ops.servers.envoy import EdgeOptions, render_envoy_config, validate_config
from ops.stack import SERVICES
from tests.e2e.browser import Browser, BrowserError
from tests.e2e.conftest import WebEdge
from tests.integration.customer_support import staff_metadata
from tests.integration.ingest_support import DriverApp, batch, fix, now_s, token
from tests.integration.orders_support import order, window
from tests.integration.pod_support import confirm_photo_proof

TIMEOUT_S = 15.0
TRACK_PATH = "/lastmile.tracking.v1.TrackingService/Track"


def online_driver(web_edge: WebEdge, where: LatLng) -> tuple[str, DriverApp]:
    """A driver of the test tenant connected through the gateway and standing at ``where``."""
    driver = f"e2e-{uuid.uuid4().hex[:8]}"
    app = DriverApp(web_edge.platform.addresses["gateway"], token(web_edge.settings, driver))
    app.hello()
    at = int(now_s())
    ack = app.send_and_wait(batch(1, [fix(where, at - 1, speed=0.0), fix(where, at, speed=0.0)]))
    assert ack.WhichOneof("command") == "ack"
    return driver, app


def shown(page: Browser, expression: str, timeout_s: float) -> bool:
    """Whether ``expression`` becomes truthy in the page within ``timeout_s``."""
    try:
        page.wait(expression, timeout_s=timeout_s)
    except BrowserError:
        return False
    return True


def _dispatch_call(web_edge: WebEdge, method: str, request: Any, orders: bool = False) -> Any:
    """One DispatchService (or OrderService) call as a dispatcher of the test tenant."""
    with grpc.insecure_channel(web_edge.platform.addresses["dispatch"]) as channel:
        stub: Any = (
            order_service_pb2_grpc.OrderServiceStub(channel)
            if orders
            else dispatch_service_pb2_grpc.DispatchServiceStub(channel)
        )
        return getattr(stub, method)(
            request, metadata=staff_metadata(web_edge.settings), timeout=TIMEOUT_S
        )


def register_depot_driver(web_edge: WebEdge, driver_id: str, depot: LatLng) -> None:
    """Register ``driver_id`` with a depot, room for 10 parcels and an 8-hour shift."""
    driver = dispatch_pb2.Driver(
        driver_id=driver_id, name="Route Driver", capacity_units=10, active=True
    )
    driver.depot.lat, driver.depot.lng = depot.lat, depot.lng
    driver.shift.CopyFrom(window(-600, 8 * 3600))
    _dispatch_call(
        web_edge, "UpsertDriver", dispatch_service_pb2.UpsertDriverRequest(driver=driver)
    )


def planned_order(web_edge: WebEdge, pickup: LatLng, drop_off: LatLng) -> str:
    """A pending planned order due within the next 4 hours; its id."""
    message = order(
        pickup=(pickup.lat, pickup.lng),
        drop_off=(drop_off.lat, drop_off.lng),
        drop_window=window(1800, 4 * 3600),
    )
    request = order_service_pb2.CreateOrderRequest(idempotency_key=uuid.uuid4().hex, order=message)
    return str(_dispatch_call(web_edge, "CreateOrder", request, orders=True).order.order_id)


def plan_route(web_edge: WebEdge, driver_id: str, order_ids: list[str]) -> route_pb2.Route:
    """PlanWave for one driver and these orders; the driver's route."""
    request = dispatch_service_pb2.PlanWaveRequest(driver_ids=[driver_id], order_ids=order_ids)
    request.time_limit.seconds = 1
    response = _dispatch_call(web_edge, "PlanWave", request)
    assert list(response.unassigned_order_ids) == []
    (route,) = response.routes
    assert route.driver_id == driver_id
    return route  # type: ignore[no-any-return]


def get_order(web_edge: WebEdge, order_id: str) -> dispatch_pb2.Order:
    """The order as dispatchers see it."""
    request = order_service_pb2.GetOrderRequest(order_id=order_id)
    return _dispatch_call(web_edge, "GetOrder", request, orders=True).order  # type: ignore[no-any-return]


def report_failed_attempt(web_edge: WebEdge, order_id: str, reason: int) -> None:
    """A dispatcher reports a failed delivery attempt."""
    request = order_service_pb2.ReportFailedAttemptRequest(
        order_id=order_id,
        reason=reason,  # type: ignore[arg-type]
        note="e2e",
    )
    _dispatch_call(web_edge, "ReportFailedAttempt", request, orders=True)


def create_fence(web_edge: WebEdge, center: LatLng, radius_m: float, driver_id: str) -> str:
    """A standing circular area fence applying to one driver; its id."""
    fence = tracking_pb2.Geofence(
        name="e2e area",
        circle=common_pb2.Circle(
            center=common_pb2.LatLng(lat=center.lat, lng=center.lng), radius_m=radius_m
        ),
        purpose=tracking_pb2.GEOFENCE_PURPOSE_AREA,
        driver_ids=[driver_id],
    )
    with grpc.insecure_channel(web_edge.platform.addresses["tracking"]) as channel:
        stub = fleet_service_pb2_grpc.FleetServiceStub(channel)
        response = stub.CreateGeofence(
            fleet_service_pb2.CreateGeofenceRequest(geofence=fence),
            metadata=staff_metadata(web_edge.settings),
            timeout=TIMEOUT_S,
        )
    return str(response.geofence.geofence_id)


def deliver_with_photo(
    web_edge: WebEdge, order_id: str, driver_id: str, door: LatLng, taken_s: float
) -> bytes:
    """The driver uploads a real JPEG to the pre-signed form and confirms it: the order is
    delivered. Returns the photo's bytes."""
    taken = dt.datetime.fromtimestamp(int(taken_s), dt.UTC)
    metadata = (("authorization", f"Bearer {token(web_edge.settings, driver_id)}"),)
    with grpc.insecure_channel(web_edge.platform.addresses["pod"]) as channel:
        pod = pod_service_pb2_grpc.ProofOfDeliveryServiceStub(channel)
        return confirm_photo_proof(pod, metadata, order_id, door, taken, TIMEOUT_S)


def broken_stream_edge(web_edge: WebEdge, data_dir: Path) -> tuple[EnvoyServer, str]:
    """A second web edge, like the real one except that the customers' Track stream goes to a
    port nobody listens on (GetTracking and everything else still work). (server, base URL)"""
    settings = web_edge.settings
    port, admin_port = free_port(), free_port()
    upstreams = {name: settings.port_of(name) for name in SERVICES}
    options = EdgeOptions(web_port=settings.web_port)
    config = json.loads(render_envoy_config(port, admin_port, upstreams, options=options))
    resources = config["static_resources"]
    clusters = resources["clusters"]
    dead = json.loads(json.dumps(next(c for c in clusters if c["name"] == "tracking")))
    dead["name"] = dead["load_assignment"]["cluster_name"] = "dead-tracking"
    endpoint = dead["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = free_port()
    clusters.append(dead)
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(0, {"match": {"path": TRACK_PATH}, "route": {"cluster": "dead-tracking"}})
    path = data_dir / "broken-envoy.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    validate_config(path)
    edge = EnvoyServer(path, admin_port, log_path=data_dir / "broken-envoy.log")
    edge.start()
    return edge, f"http://{settings.host}:{port}"
