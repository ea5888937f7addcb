"""Support of the bad-input suite: every RPC of the contracts found from the generated
descriptors, the credentials a random call carries, one call of any kind (unary, server
stream, the driver's bidirectional stream) reduced to the status it ended with, and the
checks that the platform still serves after a batch of bad input."""

from __future__ import annotations

import enum
import importlib
import pkgutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import lastmile
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import (
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.origin.v1 import origin_pb2, origin_service_pb2, origin_service_pb2_grpc
from lastmile.pod.v1 import pod_service_pb2, pod_service_pb2_grpc
from lastmile.tracking.v1 import (
    fleet_service_pb2,
    fleet_service_pb2_grpc,
    tracking_pb2,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)

from core.auth import Role, issue_token
from core.geo import LatLng
from core.settings import Settings
from ops import health
from tests.helpers import wait_until
from tests.integration.customer_support import create_driver_and_order
from tests.integration.fuzz_messages import message_class

TENANT = "tenant-test"
OTHER_TENANT = "tenant-other"
SEED_DRIVER = "fuzz-driver"
# The driver of streams whose sequence numbers are random: a huge one accepted would make
# every later event of SEED_DRIVER a duplicate, acked but never enqueued.
LOOSE_DRIVER = "fuzz-driver-loose"
SEED_ORIGIN = "fuzz-origin"
# The driver of an order no random call can name (not in Seeds.known): random calls may
# legitimately cancel the seed order or revoke its link, so "still serving" reads this one.
WITNESS_DRIVER = "fuzz-witness"
# The driver of the deterministic sweep's own order (it cancels and reschedules what it names).
SWEEP_DRIVER = "fuzz-sweep"
# The driver whose stream carries the sweep's driver events (its own rate budget and order).
EVENTS_DRIVER = "fuzz-events"
# The driver whose stream carries bytes that are no message (its acked seq is checked after).
GARBLED_DRIVER = "fuzz-garbled"
PICKUP = LatLng(35.8989, 14.5146)
DROP_OFF = LatLng(35.9122, 14.5020)

# RPCs allowed to answer UNIMPLEMENTED (none today: every RPC of the contracts is built). An
# RPC added to a proto before its handler goes here until the handler lands; no other may.
KNOWN_UNIMPLEMENTED: frozenset[str] = frozenset()

# Statuses that tell a client what was wrong with its call.
PROPER = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

UNARY_TIMEOUT_S = 30.0
# A server stream that is still open without a first message after this long is fine.
STREAM_WAIT_S = 1.0
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Rpc:
    """One method of one service of the contracts."""

    service: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        """The HTTP/2 path of the method."""
        return f"/{self.service}/{self.method.name}"

    @property
    def streams_out(self) -> bool:
        """Whether the server answers with a stream."""
        return bool(self.method.server_streaming)

    @property
    def streams_in(self) -> bool:
        """Whether the client sends a stream."""
        return bool(self.method.client_streaming)

    def allowed(self) -> frozenset[grpc.StatusCode]:
        """The statuses this RPC may end with on any input."""
        codes = set(PROPER)
        if self.streams_out:
            codes.add(grpc.StatusCode.DEADLINE_EXCEEDED)
        if self.path in KNOWN_UNIMPLEMENTED:
            codes.add(grpc.StatusCode.UNIMPLEMENTED)
        return frozenset(codes)


def all_rpcs() -> list[Rpc]:
    """Every RPC of every service in the generated ``lastmile`` packages, by path."""
    found: dict[str, Rpc] = {}
    for module_info in pkgutil.walk_packages(lastmile.__path__, "lastmile."):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(module_info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpc = Rpc(service.full_name, method)
                found[rpc.path] = rpc
    return [found[path] for path in sorted(found)]


class Credential(enum.Enum):
    """What a random call presents in its ``authorization`` metadata."""

    PREFERRED = "the role the RPC is meant for"
    NONE = "no metadata"
    GARBAGE = "a token that is not a JWT"
    EXPIRED = "an expired token"
    WRONG_SCHEME = "not Bearer"
    DRIVER = "a driver token"
    DISPATCHER = "a dispatcher token"
    ORIGIN = "an origin token"
    SERVICE = "a service token"
    OTHER_TENANT = "a dispatcher of another tenant"


# Mostly the preferred role, so that random payloads reach the handlers.
CREDENTIAL_MIX = (
    *[Credential.PREFERRED] * 12,
    Credential.NONE,
    Credential.GARBAGE,
    Credential.EXPIRED,
    Credential.WRONG_SCHEME,
    Credential.DRIVER,
    Credential.DISPATCHER,
    Credential.ORIGIN,
    Credential.SERVICE,
    Credential.OTHER_TENANT,
)

_PREFERRED_BY_SERVICE: dict[str, Role | None] = {
    "lastmile.driver.v1.DriverGatewayService": Role.DRIVER,
    # Customers: the tracking token travels in the request.
    "lastmile.tracking.v1.TrackingService": None,
}
_PREFERRED_BY_PATH: dict[str, Role | None] = {
    "/lastmile.pod.v1.ProofOfDeliveryService/CreateUploadUrl": Role.DRIVER,
    "/lastmile.pod.v1.ProofOfDeliveryService/ConfirmProof": Role.DRIVER,
    "/lastmile.origin.v1.OriginService/WatchOriginOrders": Role.ORIGIN,
    "/lastmile.origin.v1.OriginService/AcceptOrder": Role.ORIGIN,
    "/lastmile.origin.v1.OriginService/RejectOrder": Role.ORIGIN,
    "/lastmile.origin.v1.OriginService/SetPreparationTime": Role.ORIGIN,
    "/lastmile.origin.v1.OriginService/MarkReady": Role.ORIGIN,
}
_SUBJECTS = {
    Role.DRIVER: SEED_DRIVER,
    Role.DISPATCHER: "fuzz-dispatcher",
    Role.ORIGIN: SEED_ORIGIN,
    Role.SERVICE: "fuzz-service",
}


def preferred_role(rpc: Rpc) -> Role | None:
    """The role whose token gets a call of ``rpc`` past authorization (None: no token)."""
    if rpc.path in _PREFERRED_BY_PATH:
        return _PREFERRED_BY_PATH[rpc.path]
    return _PREFERRED_BY_SERVICE.get(rpc.service, Role.DISPATCHER)


def bearer(
    settings: Settings, role: Role, tenant: str = TENANT, driver: str = SEED_DRIVER
) -> tuple[tuple[str, str], ...]:
    """``authorization`` metadata of a valid token of ``role`` (a driver's: of ``driver``)."""
    subject = driver if role is Role.DRIVER else _SUBJECTS[role]
    return (("authorization", f"Bearer {issue_token(settings, subject, role, tenant)}"),)


def metadata_for(
    settings: Settings, rpc: Rpc, credential: Credential, driver: str = SEED_DRIVER
) -> tuple[tuple[str, str], ...]:
    """The metadata of one call of ``rpc`` presenting ``credential`` (driver tokens are
    ``driver``'s)."""
    if credential is Credential.PREFERRED:
        role = preferred_role(rpc)
        return () if role is None else bearer(settings, role, driver=driver)
    if credential is Credential.NONE:
        return ()
    if credential is Credential.GARBAGE:
        return (("authorization", "Bearer not-a-jwt"),)
    if credential is Credential.EXPIRED:
        token = issue_token(settings, SEED_DRIVER, Role.DISPATCHER, TENANT, ttl_s=-3600)
        return (("authorization", f"Bearer {token}"),)
    if credential is Credential.WRONG_SCHEME:
        return (("authorization", f"Basic {uuid.uuid4().hex}"),)
    if credential is Credential.OTHER_TENANT:
        return bearer(settings, Role.DISPATCHER, OTHER_TENANT)
    return bearer(settings, Role(credential.name.lower()), driver=driver)


@dataclass
class Outcome:
    """How one call ended: its status, the details, and what the stream answered."""

    code: grpc.StatusCode
    details: str
    responses: list[Message] = field(default_factory=list)


def _identity(data: bytes) -> bytes:
    return data


def call(
    channel: grpc.Channel, rpc: Rpc, payload: bytes, metadata: tuple[tuple[str, str], ...]
) -> Outcome:
    """One unary or server-streaming call with ``payload`` as the serialized request; a
    server stream is read up to its first message (or its end, or ``STREAM_WAIT_S``)."""
    out = message_class(rpc.method.output_type)
    try:
        if not rpc.streams_out:
            unary = channel.unary_unary(rpc.path, _identity, out.FromString)
            return Outcome(
                grpc.StatusCode.OK, "", [unary(payload, timeout=UNARY_TIMEOUT_S, metadata=metadata)]
            )
        stream = channel.unary_stream(rpc.path, _identity, out.FromString)
        responses: Any = stream(payload, timeout=STREAM_WAIT_S, metadata=metadata)
        first = next(iter(responses), None)
        responses.cancel()
        return Outcome(grpc.StatusCode.OK, "", [] if first is None else [first])
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "")


def connect(
    channel: grpc.Channel, rpc: Rpc, payloads: list[bytes], metadata: tuple[tuple[str, str], ...]
) -> Outcome:
    """One bidirectional stream sending ``payloads`` and half-closing; every answer is read
    until the stream ends."""
    out = message_class(rpc.method.output_type)
    stream = channel.stream_stream(rpc.path, _identity, out.FromString)
    responses: list[Message] = []
    try:
        for response in stream(iter(payloads), timeout=CONNECT_TIMEOUT_S, metadata=metadata):
            responses.append(response)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", responses)
    return Outcome(grpc.StatusCode.OK, "", responses)


def hello() -> driver_service_pb2.ConnectRequest:
    """A valid first message of the driver stream."""
    return driver_service_pb2.ConnectRequest(
        seq=0, hello=driver_pb2.Hello(device_id="fuzz-device", app_version="1")
    )


def good_event() -> driver_service_pb2.ConnectRequest:
    """A valid event any driver may send (numbered by the caller): random events alone are
    almost all refused, and the suite must see acks too."""
    return driver_service_pb2.ConnectRequest(
        status=driver_pb2.StatusChange(status=common_pb2.DRIVER_STATUS_IDLE)
    )


@dataclass
class Summary:
    """What one RPC answered over its examples."""

    examples: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    # Kinds of the messages streams answered (ack, reject, welcome...).
    answers: Counter[str] = field(default_factory=Counter)

    def line(self, path: str) -> str:
        """One line for the report."""
        codes = ", ".join(f"{name} {count}" for name, count in self.codes.most_common())
        answers = ", ".join(f"{name} {count}" for name, count in self.answers.most_common())
        return f"{path}: {self.examples} examples; {codes}" + (
            f"; answers: {answers}" if answers else ""
        )


@dataclass(frozen=True)
class Seeds:
    """Resources that exist on the platform under test."""

    order_id: str
    tracking_token: str
    geofence_id: str
    witness_order_id: str
    witness_token: str

    def known(self) -> tuple[str, ...]:
        """Every id worth naming in a random string."""
        return (
            SEED_DRIVER,
            LOOSE_DRIVER,
            SEED_ORIGIN,
            self.order_id,
            self.tracking_token,
            self.geofence_id,
            f"{self.order_id}-p",
            f"{self.order_id}-d",
        )


def seed(settings: Settings, edge: str) -> Seeds:
    """A driver, an order, an origin and a geofence in the test tenant."""
    assigned = assigned_order(settings, edge, SEED_DRIVER)
    witness = create_driver_and_order(settings, edge, WITNESS_DRIVER, PICKUP, DROP_OFF)
    staff = bearer(settings, Role.DISPATCHER)
    with grpc.insecure_channel(edge) as channel:
        origin = origin_pb2.Origin(origin_id=SEED_ORIGIN, name="Fuzz Kitchen")
        origin.address.location.lat, origin.address.location.lng = PICKUP.lat, PICKUP.lng
        origin_service_pb2_grpc.OriginServiceStub(channel).UpsertOrigin(
            origin_service_pb2.UpsertOriginRequest(origin=origin), metadata=staff, timeout=30
        )
        fence = tracking_pb2.Geofence(name="fuzz fence")
        fence.circle.center.lat, fence.circle.center.lng = DROP_OFF.lat, DROP_OFF.lng
        fence.circle.radius_m = 100
        created = fleet_service_pb2_grpc.FleetServiceStub(channel).CreateGeofence(
            fleet_service_pb2.CreateGeofenceRequest(geofence=fence), metadata=staff, timeout=30
        )
    return Seeds(assigned.order_id, assigned.tracking_token, created.geofence.geofence_id, *witness)


@dataclass(frozen=True)
class Assigned:
    """An order assigned to a driver: what the sweep's plausible requests name."""

    order_id: str
    tracking_token: str
    route_id: str


def assigned_order(settings: Settings, edge: str, driver_id: str) -> Assigned:
    """A new order assigned to ``driver_id`` (registered here), so that the driver's stop,
    failed-attempt and route calls reach dispatch's checks."""
    order_id, tracking_token = create_driver_and_order(settings, edge, driver_id, PICKUP, DROP_OFF)
    with grpc.insecure_channel(edge) as channel:
        answer = dispatch_service_pb2_grpc.DispatchServiceStub(channel).AssignOrder(
            dispatch_service_pb2.AssignOrderRequest(order_id=order_id, driver_id=driver_id),
            metadata=bearer(settings, Role.DISPATCHER),
            timeout=30,
        )
    assert answer.order.route_id, f"order {order_id} assigned without a route"
    return Assigned(order_id, tracking_token, answer.order.route_id)


def pick_up(settings: Settings, edge: str, driver_id: str, order_id: str) -> None:
    """``driver_id`` arrives at the order's pickup and picks it up (stop events on its own
    stream, as the app sends them); returns once dispatch shows the order picked up."""
    service = driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"]
    rpc = Rpc(service.full_name, service.methods_by_name["Connect"])
    events = [hello()]
    for seq, kind in enumerate(
        (driver_pb2.STOP_EVENT_KIND_ARRIVED, driver_pb2.STOP_EVENT_KIND_PICKED_UP), start=1
    ):
        stop = driver_pb2.StopEvent(order_id=order_id, stop_id=f"{order_id}-p", kind=kind)
        events.append(driver_service_pb2.ConnectRequest(seq=seq, stop=stop))
    staff = bearer(settings, Role.DISPATCHER)
    with grpc.insecure_channel(edge) as channel:
        payloads = [e.SerializeToString() for e in events]
        outcome = connect(channel, rpc, payloads, bearer(settings, Role.DRIVER, driver=driver_id))
        assert outcome.code == grpc.StatusCode.OK, outcome
        orders = order_service_pb2_grpc.OrderServiceStub(channel)

        def picked_up() -> bool:
            request = order_service_pb2.GetOrderRequest(order_id=order_id)
            order = orders.GetOrder(request, metadata=staff, timeout=30).order
            return order.status == common_pb2.ORDER_STATUS_PICKED_UP

        wait_until(picked_up, timeout=30, what=f"order {order_id} picked up")


def sweep_ids(seeds: Seeds, driver_id: str, assigned: Assigned) -> dict[str, str]:
    """The ids a plausible request of the sweep names, by field name: ``driver_id`` and
    the assigned order's own, the seed origin and geofence."""
    ids = {
        "driver_id": driver_id,
        "order_id": assigned.order_id,
        "tracking_token": assigned.tracking_token,
        "route_id": assigned.route_id,
        "stop_id": f"{assigned.order_id}-p",
        "origin_id": SEED_ORIGIN,
        "geofence_id": seeds.geofence_id,
        "tenant_id": TENANT,
    }
    # Lists of ids (driver_ids, order_ids...) name the same ones.
    return ids | {f"{name}s": value for name, value in ids.items() if name.endswith("_id")}


def _tracking(channel: grpc.Channel, token: str) -> tracking_service_pb2.GetTrackingResponse:
    """GetTracking of ``token``, waiting out its rate limit (random calls may have spent the
    burst of every caller of this address)."""
    stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)

    def attempt() -> tracking_service_pb2.GetTrackingResponse | None:
        try:
            return stub.GetTracking(
                tracking_service_pb2.GetTrackingRequest(tracking_token=token), timeout=30
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None
            raise AssertionError(f"GetTracking of the witness order: {error.code()}") from error

    answer = wait_until(attempt, timeout=15, what="GetTracking of the witness order")
    assert answer is not None
    return answer


def assert_still_serving(
    settings: Settings, addresses: dict[str, str], edge: str, seeds: Seeds
) -> None:
    """Every process answers its health check, and one known-good call per process works."""
    for name, address in addresses.items():
        status = health.check(address, timeout=10)
        assert status == "SERVING", f"{name} answers health with {status} after bad input"
    staff = bearer(settings, Role.DISPATCHER)
    with grpc.insecure_channel(edge) as channel:
        order = order_service_pb2_grpc.OrderServiceStub(channel).GetOrder(
            order_service_pb2.GetOrderRequest(order_id=seeds.witness_order_id),
            metadata=staff,
            timeout=30,
        )
        assert order.order.order_id == seeds.witness_order_id
        tracking = _tracking(channel, seeds.witness_token)
        assert tracking.snapshot.order_id == seeds.witness_order_id
        pod_service_pb2_grpc.ProofOfDeliveryServiceStub(channel).ListFlaggedProofs(
            pod_service_pb2.ListFlaggedProofsRequest(), metadata=staff, timeout=30
        )
        service = driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"]
        rpc = Rpc(service.full_name, service.methods_by_name["Connect"])
        driver = bearer(settings, Role.DRIVER)
        outcome = connect(channel, rpc, [hello().SerializeToString()], driver)
    assert outcome.code == grpc.StatusCode.OK, outcome
    assert [r.WhichOneof("command") for r in outcome.responses][:1] == ["welcome"], outcome
