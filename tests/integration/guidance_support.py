"""Helpers of the driver-guidance tests: a driver app that keeps the commands it is sent
while it waits for acks, dispatch stubs of the test tenant, and points along a route's legs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from lastmile.common.v1 import route_pb2
from lastmile.dispatch.v1 import (
    dispatch_pb2,
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.driver.v1 import driver_pb2

from core.auth import Role
from core.geo import LatLng, haversine_m
from core.settings import Settings
from tests.integration.ingest_support import DriverApp, Request, Response, fix, token

VALLETTA = (35.8989, 14.5146)
SLIEMA = (35.9122, 14.5042)
ST_JULIANS = (35.9186, 14.4892)


class GuidedApp(DriverApp):
    """A driver app whose commands (route updates, instruction changes...) are kept, in order,
    while it waits for the ack of each event it sends."""

    def __init__(self, settings: Settings, address: str, driver_id: str) -> None:
        super().__init__(address, token(settings, driver_id))
        self.commands: list[Response] = []
        self._taken: set[int] = set()
        self.seq = 0

    def connect(self) -> driver_pb2.Welcome:
        """Hello; the next event continues after the last accepted seq."""
        welcome = self.hello()
        self.seq = welcome.last_acked_seq
        return welcome

    def answer(self, **fields: Any) -> Response:
        """Send one event with the next seq; its Ack or Reject (other commands are kept)."""
        self.seq += 1
        self.send(Request(seq=self.seq, **fields))
        while True:
            response = self.recv()
            if response.WhichOneof("command") in ("ack", "reject"):
                return response
            self.commands.append(response)

    def event(self, **fields: Any) -> None:
        """Send one event with the next seq and wait for its ack."""
        response = self.answer(**fields)
        assert response.WhichOneof("command") == "ack", response

    def fixes(self, points: Sequence[tuple[LatLng, float]]) -> None:
        """One LocationBatch of fixes at (position, epoch second)."""
        self.event(locations=driver_pb2.LocationBatch(fixes=[fix(p, at) for p, at in points]))

    def ack_route(self, route: route_pb2.Route) -> None:
        """RouteAck of the route's version."""
        self.event(route_ack=driver_pb2.RouteAck(route_id=route.route_id, version=route.version))

    def next_command(self, kind: str, timeout: float = 20.0) -> Any:
        """The first command of ``kind`` not taken yet (others stay for later calls)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, command in enumerate(self.commands):
                if index not in self._taken and command.WhichOneof("command") == kind:
                    self._taken.add(index)
                    return getattr(command, kind)
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind} within {timeout}s; got {self.commands}"
            self.commands.append(self.recv(timeout=remaining))

    def updates(self) -> list[driver_pb2.RouteUpdate]:
        """Every RouteUpdate received so far."""
        return [c.route_update for c in self.commands if c.WhichOneof("command") == "route_update"]


class Staff:
    """Dispatch stubs speaking as a dispatcher of the test tenant."""

    def __init__(self, settings: Settings, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.admin = dispatch_service_pb2_grpc.DispatchServiceStub(self.channel)
        self.orders = order_service_pb2_grpc.OrderServiceStub(self.channel)
        bearer = token(settings, "dispatcher-guidance", Role.DISPATCHER)
        self.md = (("authorization", f"Bearer {bearer}"),)

    def driver(self, label: str, depot: tuple[float, float] = VALLETTA) -> str:
        """A new active driver based at ``depot``, on shift from two hours ago for ten."""
        driver_id = f"drv-{label}-{uuid.uuid4().hex[:8]}"
        driver = dispatch_pb2.Driver(
            driver_id=driver_id, name=label, capacity_units=10, active=True
        )
        driver.depot.lat, driver.depot.lng = depot
        driver.shift.start.FromSeconds(int(time.time()) - 2 * 3600)
        driver.shift.end.FromSeconds(int(time.time()) + 8 * 3600)
        self.admin.UpsertDriver(
            dispatch_service_pb2.UpsertDriverRequest(driver=driver), metadata=self.md
        )
        return driver_id

    def order(self, drop_off: tuple[float, float], text: str, notes: str) -> str:
        """A pending planned order from Valletta, contact-free, with access notes."""
        message = dispatch_pb2.Order(kind=dispatch_pb2.ORDER_KIND_PLANNED, size_units=1)
        message.pickup_address.line1 = "Republic St"
        message.pickup_address.location.lat, message.pickup_address.location.lng = VALLETTA
        message.drop_off_address.line1 = "Tower Rd"
        message.drop_off_address.access_notes = notes
        message.drop_off_address.location.lat, message.drop_off_address.location.lng = drop_off
        message.drop_off_window.start.FromSeconds(int(time.time()) + 1800)
        message.drop_off_window.end.FromSeconds(int(time.time()) + 4 * 3600)
        message.instructions.text = text
        message.instructions.contact_free = True
        request = order_service_pb2.CreateOrderRequest(
            idempotency_key=uuid.uuid4().hex, order=message
        )
        return str(self.orders.CreateOrder(request, metadata=self.md).order.order_id)

    def route(self, driver_id: str) -> route_pb2.Route:
        """GetRoute of the driver's active route."""
        request = dispatch_service_pb2.GetRouteRequest(driver_id=driver_id)
        return self.admin.GetRoute(request, metadata=self.md).route

    def close(self) -> None:
        """Drop the channel."""
        self.channel.close()


def leg_points(route: route_pb2.Route, spacing_m: float = 40.0) -> list[LatLng]:
    """Points along the route's legs in driving order, about ``spacing_m`` apart."""
    points: list[LatLng] = []
    for leg in route.legs:
        for raw in leg.geometry:
            point = LatLng(raw.lat, raw.lng)
            if not points or haversine_m(points[-1], point) >= spacing_m:
                points.append(point)
    return points


def first_leg_start(route: route_pb2.Route) -> LatLng:
    """Where the first leg with geometry starts."""
    leg = next(leg for leg in route.legs if leg.geometry)
    return LatLng(leg.geometry[0].lat, leg.geometry[0].lng)


def stops_of(route: route_pb2.Route, order_id: str) -> list[route_pb2.Stop]:
    """The route's stops of one order."""
    return [s for s in route.stops if s.order_id == order_id]


def polled(call: Callable[[], Any], check: Callable[[Any], bool]) -> Callable[[], Any]:
    """A wait_until predicate: the call's result when ``check`` holds, else None."""

    def predicate() -> Any:
        value = call()
        return value if check(value) else None

    return predicate
