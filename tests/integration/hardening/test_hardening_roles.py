"""Who may call what, for every RPC of every service (the table of docs/security.md): a call
without a token is UNAUTHENTICATED and a token of a role the RPC is not for is
PERMISSION_DENIED, before the handler looks at the request. New RPCs must be added here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import grpc
import lastmile
import pytest
from google.protobuf import symbol_database
from google.protobuf.descriptor import MethodDescriptor
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.auth import Role
from tests.integration.hardening.conftest import Hardened
from tests.integration.hardening.support import TIMEOUT_S, bearer

pytestmark = pytest.mark.integration
STAFF = frozenset({Role.DISPATCHER, Role.SERVICE})
# Customers' RPCs: authorized by the order's tracking link in the request, not by a token.
BY_LINK = frozenset(
    {
        "/lastmile.tracking.v1.TrackingService/Track",
        "/lastmile.tracking.v1.TrackingService/GetTracking",
    }
)
# Roles allowed per RPC; services not listed are staff-only.
ALLOWED: dict[str, frozenset[Role]] = {
    "/lastmile.driver.v1.DriverGatewayService/Connect": frozenset({Role.DRIVER}),
    "/lastmile.dispatch.v1.OrderService/ReportFailedAttempt": STAFF | {Role.DRIVER},
    "/lastmile.pod.v1.ProofOfDeliveryService/CreateUploadUrl": frozenset({Role.DRIVER}),
    "/lastmile.pod.v1.ProofOfDeliveryService/ConfirmProof": frozenset({Role.DRIVER}),
    "/lastmile.pod.v1.ProofOfDeliveryService/GetProof": frozenset({Role.DISPATCHER}),
    "/lastmile.pod.v1.ProofOfDeliveryService/ListFlaggedProofs": frozenset({Role.DISPATCHER}),
    "/lastmile.origin.v1.OriginService/GetOrigin": STAFF | {Role.ORIGIN},
    "/lastmile.origin.v1.OriginService/WatchOriginOrders": STAFF | {Role.ORIGIN},
    "/lastmile.origin.v1.OriginService/AcceptOrder": STAFF | {Role.ORIGIN},
    "/lastmile.origin.v1.OriginService/RejectOrder": STAFF | {Role.ORIGIN},
    "/lastmile.origin.v1.OriginService/SetPreparationTime": STAFF | {Role.ORIGIN},
    "/lastmile.origin.v1.OriginService/MarkReady": STAFF | {Role.ORIGIN},
}
SERVICE_OF = {
    "lastmile.driver.v1": "gateway",
    "lastmile.tracking.v1": "tracking",
    "lastmile.dispatch.v1": "dispatch",
    "lastmile.origin.v1": "dispatch",
    "lastmile.integration.v1": "dispatch",
    "lastmile.pod.v1": "pod",
}


def _methods() -> list[MethodDescriptor]:
    found: dict[str, MethodDescriptor] = {}
    for info in pkgutil.walk_packages(lastmile.__path__, "lastmile."):
        if not info.name.endswith("_service_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"/{service.full_name}/{method.name}"] = method
    return [found[path] for path in sorted(found)]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


CASES = [
    (_path(m), role)
    for m in _methods()
    if _path(m) not in BY_LINK
    for role in (None, *Role)
    if role is None or role not in ALLOWED.get(_path(m), STAFF)
]


@pytest.fixture(scope="module")
def channels(hardened: Hardened) -> Iterator[dict[str, grpc.Channel]]:
    made = {name: grpc.insecure_channel(address) for name, address in hardened.addresses.items()}
    yield made
    for channel in made.values():
        channel.close()


def _call(channel: grpc.Channel, method: MethodDescriptor, metadata: Any) -> None:
    """One call with an empty request; raises the RpcError it fails with."""
    request_type = symbol_database.Default().GetSymbol(method.input_type.full_name)
    path = _path(method)
    options: dict[str, Any] = {"metadata": metadata, "timeout": TIMEOUT_S}
    if method.client_streaming:
        hello = driver_service_pb2.ConnectRequest(seq=0, hello=driver_pb2.Hello(device_id="t"))
        stream = channel.stream_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        next(iter(stream(iter([hello]), **options)))
    elif method.server_streaming:
        call = channel.unary_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        next(iter(call(request_type(), **options)))
    else:
        unary = channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        unary(request_type(), **options)


def test_every_rpc_is_in_the_table() -> None:
    paths = {_path(m) for m in _methods()}
    assert set(ALLOWED) <= paths and paths >= BY_LINK
    assert len(paths) >= 50  # every service's RPCs were found


@pytest.mark.parametrize(("path", "role"), CASES, ids=[f"{p}-{r}" for p, r in CASES])
def test_callers_outside_the_table_are_refused(
    hardened: Hardened, channels: dict[str, grpc.Channel], path: str, role: Role | None
) -> None:
    method = next(m for m in _methods() if _path(m) == path)
    package = method.containing_service.file.package
    metadata = () if role is None else bearer(hardened, "someone", role, "tenant-roles")
    with pytest.raises(grpc.RpcError) as caught:
        _call(channels[SERVICE_OF[package]], method, metadata)
    error: Any = caught.value
    wanted = grpc.StatusCode.UNAUTHENTICATED if role is None else grpc.StatusCode.PERMISSION_DENIED
    assert error.code() == wanted, (error.code(), error.details())
