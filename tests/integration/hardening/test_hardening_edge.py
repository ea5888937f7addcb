"""What the Envoy edge enforces, checked through the real Envoy: CORS for the configured
origins only, the request body limit (413) of API routes while the driver's Connect
stream (not buffered) still flows, and statuses that reach browsers through grpc-web."""

from __future__ import annotations

import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import grpc
import pytest
from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2, order_service_pb2_grpc

from core.auth import Role
from tests.helpers import NOT_A_MESSAGE
from tests.integration.hardening.conftest import ALLOWED_ORIGIN, EDGE_MAX_BYTES, Hardened
from tests.integration.hardening.support import DOOR, TIMEOUT_S, bearer, drive, metric
from tests.integration.ingest_support import DriverApp, token

pytestmark = pytest.mark.integration
GET_ORDER = "/lastmile.dispatch.v1.OrderService/GetOrder"
CREATE_ORDER = "/lastmile.dispatch.v1.OrderService/CreateOrder"


def _http(
    h: Hardened, path: str, method: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://{h.edge_address}{path}", data=body or None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def _preflight(h: Hardened, origin: str) -> tuple[int, dict[str, str]]:
    return _http(
        h,
        GET_ORDER,
        "OPTIONS",
        {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,authorization",
        },
    )


def _grpc_web(h: Hardened, path: str, message: bytes, origin: str) -> tuple[int, dict[str, str]]:
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "origin": origin,
    }
    return _http(h, path, "POST", headers, struct.pack(">BI", 0, len(message)) + message)


def test_cors_answers_the_allowed_origin_only(hardened: Hardened) -> None:
    status, headers = _preflight(hardened, ALLOWED_ORIGIN)
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in headers["access-control-allow-headers"]
    for origin in ("https://evil.example", "http://127.0.0.1:8080", "null"):
        _, refused = _preflight(hardened, origin)
        assert "access-control-allow-origin" not in refused, origin
    # Actual grpc-web calls: only the allowed origin may read the answer.
    request = order_service_pb2.GetOrderRequest(order_id="nope").SerializeToString()
    _, allowed = _grpc_web(hardened, GET_ORDER, request, ALLOWED_ORIGIN)
    assert allowed.get("access-control-allow-origin") == ALLOWED_ORIGIN
    _, foreign = _grpc_web(hardened, GET_ORDER, request, "https://evil.example")
    assert "access-control-allow-origin" not in foreign


def _started(h: Hardened, method: str) -> float:
    labels = {"service": "lastmile.dispatch.v1.OrderService", "method": method}
    return metric(h.metrics["dispatch"], "lastmile_rpc_started_total", labels) or 0.0


def _big_order() -> order_service_pb2.CreateOrderRequest:
    order = dispatch_pb2.Order(kind=dispatch_pb2.ORDER_KIND_INSTANT)
    order.instructions.text = "x" * (4 * EDGE_MAX_BYTES)
    return order_service_pb2.CreateOrderRequest(idempotency_key=uuid.uuid4().hex, order=order)


def test_bodies_over_the_limit_never_reach_the_service(hardened: Hardened) -> None:
    before = _started(hardened, "CreateOrder")
    # grpc-web (browsers): HTTP 413.
    status, _ = _grpc_web(hardened, CREATE_ORDER, _big_order().SerializeToString(), ALLOWED_ORIGIN)
    assert status == 413
    # Native gRPC: the call fails with Envoy's "Payload Too Large".
    staff = bearer(hardened, "desk", Role.DISPATCHER, "tenant-edge")
    with grpc.insecure_channel(hardened.edge_address) as channel:
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            orders.CreateOrder(_big_order(), metadata=staff, timeout=TIMEOUT_S)
        error: Any = caught.value
        # grpc maps Envoy's local 413 reply to one of these, depending on when it arrives.
        assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNKNOWN)
        assert "Payload Too Large" in (error.details() or "")
        assert _started(hardened, "CreateOrder") == before  # dispatch never saw either
        # A request under the limit goes through.
        small = order_service_pb2.GetOrderRequest(order_id="missing")
        with pytest.raises(grpc.RpcError) as caught:
            orders.GetOrder(small, metadata=staff, timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (struct.pack(">BI", 0, len(NOT_A_MESSAGE)) + NOT_A_MESSAGE, "not a valid message"),
        # A frame cut short, half a frame header, no frame at all.
        (struct.pack(">BI", 0, 100) + b"ab", "no complete message"),
        (b"\x00\x00", "no complete message"),
        (b"", "no complete message"),
    ],
    ids=["not-a-message", "cut-frame", "half-header", "empty"],
)
def test_a_browser_body_without_a_request_is_invalid_argument(
    hardened: Hardened, body: bytes, why: str
) -> None:
    # The status reaches the browser through Envoy's translation, as a trailers-only answer.
    # grpc alone answers UNKNOWN naming a Python exception to the first, and nothing at all
    # to the others: the call waits for the client's deadline.
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "origin": ALLOWED_ORIGIN,
    }
    status, answer = _http(hardened, GET_ORDER, "POST", headers, body)
    assert status == 200, answer
    assert answer.get("grpc-status") == str(grpc.StatusCode.INVALID_ARGUMENT.value[0]), answer
    assert why in urllib.parse.unquote(answer.get("grpc-message", "")), answer


def test_the_driver_stream_is_not_buffered(hardened: Hardened) -> None:
    driver = f"edge-{uuid.uuid4().hex[:8]}"
    app = DriverApp(hardened.edge_address, token(hardened.settings, driver))
    try:
        assert app.hello().driver_id == driver
        drive(app, 1, DOOR)  # acked while the stream stays open
        drive(app, 2, DOOR)
    finally:
        app.close()
