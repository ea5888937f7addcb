"""Helpers of the hardening tests: one tenant's staff clients over the generated stubs, its
drivers' apps, orders moved along by the real RPCs and driver events, metrics scraping."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import (
    dispatch_pb2,
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.driver.v1 import driver_pb2
from lastmile.pod.v1 import pod_service_pb2_grpc
from lastmile.tracking.v1 import (
    fleet_service_pb2_grpc,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)
from prometheus_client.parser import text_string_to_metric_families

from core.auth import Role, issue_token
from core.geo import LatLng
from tests.helpers import wait_until
from tests.integration.customer_support import wait_tracking_sees
from tests.integration.hardening.conftest import Hardened
from tests.integration.ingest_support import DriverApp, Request, batch, fix, now_s

TIMEOUT_S = 15.0
PICKUP = LatLng(35.8920, 14.5050)  # Floriana
DOOR = LatLng(35.8989, 14.5146)  # Valletta
Metadata = tuple[tuple[str, str], ...]


def bearer(h: Hardened, subject: str, role: Role, tenant: str) -> Metadata:
    """Call metadata with a token of the platform."""
    return (("authorization", f"Bearer {issue_token(h.settings, subject, role, tenant)}"),)


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call fails with."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), str(error.details())


class Tenant:
    """Staff of one tenant: OrderService, DispatchService, FleetService, pod, customers."""

    def __init__(self, h: Hardened, name: str = "") -> None:
        self.h = h
        self.name = name or f"tenant-{uuid.uuid4().hex[:8]}"
        self.md = bearer(h, "desk", Role.DISPATCHER, self.name)
        self._channels = {s: grpc.insecure_channel(a) for s, a in h.addresses.items()}
        self.orders = order_service_pb2_grpc.OrderServiceStub(self._channels["dispatch"])
        self.admin = dispatch_service_pb2_grpc.DispatchServiceStub(self._channels["dispatch"])
        self.fleet = fleet_service_pb2_grpc.FleetServiceStub(self._channels["tracking"])
        self.tracking = tracking_service_pb2_grpc.TrackingServiceStub(self._channels["tracking"])
        self.pod = pod_service_pb2_grpc.ProofOfDeliveryServiceStub(self._channels["pod"])

    def driver(self, prefix: str = "drv") -> str:
        """A new registered, active driver of the tenant."""
        driver_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        driver = dispatch_pb2.Driver(driver_id=driver_id, name="Maria Borg", active=True)
        self.admin.UpsertDriver(
            dispatch_service_pb2.UpsertDriverRequest(driver=driver),
            metadata=self.md,
            timeout=TIMEOUT_S,
        )
        return driver_id

    def driver_metadata(self, driver_id: str) -> Metadata:
        """A token of one of the tenant's drivers."""
        return bearer(self.h, driver_id, Role.DRIVER, self.name)

    def app(self, driver_id: str) -> DriverApp:
        """The driver's Connect stream (Hello sent, Welcome read)."""
        app = DriverApp(self.h.addresses["gateway"], issue_token_for(self, driver_id))
        app.hello()
        return app

    def create(self) -> order_service_pb2.CreateOrderResponse:
        """A new instant order (pickup in Floriana, drop-off in Valletta)."""
        order = dispatch_pb2.Order(kind=dispatch_pb2.ORDER_KIND_INSTANT, size_units=1)
        order.pickup_address.location.lat = PICKUP.lat
        order.pickup_address.location.lng = PICKUP.lng
        order.drop_off_address.location.lat = DOOR.lat
        order.drop_off_address.location.lng = DOOR.lng
        request = order_service_pb2.CreateOrderRequest(
            idempotency_key=uuid.uuid4().hex, order=order
        )
        response: order_service_pb2.CreateOrderResponse = self.orders.CreateOrder(
            request, metadata=self.md, timeout=TIMEOUT_S
        )
        return response

    def assign(self, order_id: str, driver_id: str) -> None:
        """AssignOrder as the tenant's dispatcher."""
        self.admin.AssignOrder(
            dispatch_service_pb2.AssignOrderRequest(order_id=order_id, driver_id=driver_id),
            metadata=self.md,
            timeout=TIMEOUT_S,
        )

    def status(self, order_id: str) -> int:
        """The order's status through GetOrder."""
        request = order_service_pb2.GetOrderRequest(order_id=order_id)
        return int(self.orders.GetOrder(request, metadata=self.md, timeout=TIMEOUT_S).order.status)

    def wait_status(self, order_id: str, status: int) -> None:
        """Poll GetOrder until the order is in ``status``."""
        wait_until(
            lambda: self.status(order_id) == status, TIMEOUT_S, what=f"{order_id} at {status}"
        )

    def get_tracking(self, token: str) -> tracking_service_pb2.GetTrackingResponse:
        """GetTracking as the customer (no credentials but the link)."""
        request = tracking_service_pb2.GetTrackingRequest(tracking_token=token)
        response: tracking_service_pb2.GetTrackingResponse = self.tracking.GetTracking(
            request, timeout=TIMEOUT_S
        )
        return response

    def close(self) -> None:
        """Drop the channels."""
        for channel in self._channels.values():
            channel.close()


def issue_token_for(tenant: Tenant, driver_id: str) -> str:
    """The bearer token of one of ``tenant``'s drivers."""
    return issue_token(tenant.h.settings, driver_id, Role.DRIVER, tenant.name)


def stop(seq: int, order_id: str, kind: int) -> Request:
    """A StopEvent of the order's pickup stop."""
    event = driver_pb2.StopEvent(order_id=order_id, stop_id=f"{order_id}-pickup", kind=kind)  # type: ignore[arg-type]
    return Request(seq=seq, stop=event)


def under_way(tenant: Tenant, app: DriverApp, driver_id: str, seq: int = 1) -> str:
    """A new order assigned to the driver and walked to AT_PICKUP by the driver's own stop
    event (through the gateway); its tracking token."""
    created = tenant.create()
    tenant.assign(created.order.order_id, driver_id)
    ack = app.send_and_wait(stop(seq, created.order.order_id, driver_pb2.STOP_EVENT_KIND_ARRIVED))
    assert ack.WhichOneof("command") == "ack", ack
    tenant.wait_status(created.order.order_id, common_pb2.ORDER_STATUS_AT_PICKUP)
    redis_url = tenant.h.settings.redis_url
    wait_tracking_sees(
        redis_url, driver_id, created.order.order_id, common_pb2.ORDER_STATUS_AT_PICKUP
    )
    return created.order.tracking_token


def drive(app: DriverApp, seq: int, where: LatLng) -> driver_pb2.Ack:
    """One location batch of two fixes at ``where``; its Ack (a Reject fails the test)."""
    at = now_s()
    response = app.send_and_wait(batch(seq, [fix(where, at - 1), fix(where, at)]))
    assert response.WhichOneof("command") == "ack", response
    return response.ack


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of a service's /metrics (summed over label sets matching ``labels``)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            found = (found or 0.0) + float(sample.value)
    return found
