"""The service interceptor turns domain errors into gRPC statuses, binds the caller and counts
RPCs: checked on an in-process grpc.aio server running a servicer built from generated code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc import aio
from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2, order_service_pb2_grpc
from prometheus_client import REGISTRY

from core import auth
from core.auth import Role
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.inputs import MAX_ID_CHARS, MAX_TEXT_CHARS
from core.interceptors import MAX_DETAILS_BYTES, ServiceInterceptor
from core.settings import Settings
from tests.helpers import NOT_A_MESSAGE, async_wait_until

SETTINGS = Settings().replace(token_secret="interceptor-test-secret-32-bytes-long")
SERVICE = "lastmile.dispatch.v1.OrderService"
LEAKY_DETAIL = "password=hunter2"


class Orders(order_service_pb2_grpc.OrderServiceServicer):
    """One behaviour per method; the methods not overridden stay UNIMPLEMENTED."""

    async def GetOrder(
        self, request: order_service_pb2.GetOrderRequest, context: Any
    ) -> order_service_pb2.GetOrderResponse:
        if request.order_id.startswith("missing"):
            raise NotFound(f"order {request.order_id} does not exist")
        caller = auth.require(Role.DISPATCHER)
        return order_service_pb2.GetOrderResponse(
            order=dispatch_pb2.Order(order_id=request.order_id, tenant_id=caller.tenant_id)
        )

    async def ReportFailedAttempt(
        self, request: order_service_pb2.ReportFailedAttemptRequest, context: Any
    ) -> order_service_pb2.ReportFailedAttemptResponse:
        raise FailedPrecondition(f"cannot record: {request.note}")

    async def CreateOrder(
        self, request: order_service_pb2.CreateOrderRequest, context: Any
    ) -> order_service_pb2.CreateOrderResponse:
        raise InvalidArgument("drop_off_address is required")

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Any
    ) -> order_service_pb2.ListOrdersResponse:
        raise RuntimeError(f"cannot connect: {LEAKY_DETAIL}")

    def UpdateInstructions(
        self, request: order_service_pb2.UpdateInstructionsRequest, context: Any
    ) -> order_service_pb2.UpdateInstructionsResponse:
        # A plain (not async) handler works too.
        return order_service_pb2.UpdateInstructionsResponse(
            order=dispatch_pb2.Order(order_id=request.order_id)
        )

    async def WatchOrders(
        self, request: order_service_pb2.WatchOrdersRequest, context: Any
    ) -> AsyncIterator[order_service_pb2.WatchOrdersResponse]:
        yield order_service_pb2.WatchOrdersResponse()
        if "crash" in request.order_ids:
            raise ValueError(LEAKY_DETAIL)
        raise FailedPrecondition("order o-1 is already delivered")


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[aio.Channel]:
    """A client channel to an in-process server with the interceptor."""
    server = aio.server(interceptors=[ServiceInterceptor(SETTINGS, "dispatch")])
    # The typed stubs mark the methods left UNIMPLEMENTED abstract (see core.runtime.Servicer).
    servicer = Orders()  # type: ignore[abstract]
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close(None)
        await server.stop(None)


@pytest.fixture
def stub(channel: aio.Channel) -> order_service_pb2_grpc.OrderServiceAsyncStub:
    """The async stub of the order service."""
    return order_service_pb2_grpc.OrderServiceStub(channel)


@pytest.fixture(autouse=True)
def anonymous() -> Iterator[None]:
    """The server handles calls in this process: leave no caller bound between tests."""
    token = auth.set_current_principal(None)
    yield
    auth._current.reset(token)


def _handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "lastmile_rpc_handled_total", {"service": SERVICE, "method": method, "code": code}
    )
    return float(value or 0.0)


async def _counted(method: str, code: str, expected: float) -> None:
    """Wait for the counter: ``abort`` sends the status before the interceptor counts it."""

    async def reached() -> bool:
        return _handled(method, code) >= expected

    await async_wait_until(reached, within=5, what=f"{method} {code} counted")
    assert _handled(method, code) == expected


def _bearer(role: Role) -> list[tuple[str, str]]:
    token = auth.issue_token(SETTINGS, "someone", role, "tenant-a")
    return [("authorization", f"Bearer {token}")]


async def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_not_found_keeps_its_message(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    before = _handled("GetOrder", "NOT_FOUND")
    call = stub.GetOrder(order_service_pb2.GetOrderRequest(order_id="missing"))
    assert await _status(call) == (grpc.StatusCode.NOT_FOUND, "order missing does not exist")
    await _counted("GetOrder", "NOT_FOUND", before + 1)


async def test_invalid_argument_keeps_its_message(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.CreateOrder(order_service_pb2.CreateOrderRequest())
    assert await _status(call) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "drop_off_address is required",
    )


async def test_unexpected_error_is_internal_without_details(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    before = _handled("ListOrders", "INTERNAL")
    call = stub.ListOrders(order_service_pb2.ListOrdersRequest())
    assert await _status(call) == (grpc.StatusCode.INTERNAL, "internal error")
    await _counted("ListOrders", "INTERNAL", before + 1)


async def test_method_not_overridden_is_unimplemented(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.CancelOrder(order_service_pb2.CancelOrderRequest(order_id="o-1"))
    assert await _status(call) == (
        grpc.StatusCode.UNIMPLEMENTED,
        f"/{SERVICE}/CancelOrder is not implemented yet",
    )


async def test_plain_handler_succeeds_and_is_counted_ok(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    before = _handled("UpdateInstructions", "OK")
    reply = await stub.UpdateInstructions(
        order_service_pb2.UpdateInstructionsRequest(order_id="o-9")
    )
    assert reply.order.order_id == "o-9"
    await _counted("UpdateInstructions", "OK", before + 1)


async def test_streaming_error_after_a_message(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.WatchOrders(order_service_pb2.WatchOrdersRequest(order_ids=["o-1"]))
    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for reply in call:
            received.append(reply)
    assert len(received) == 1
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "order o-1 is already delivered"

    async def closed() -> bool:
        labels = {"service": SERVICE, "method": "WatchOrders"}
        return REGISTRY.get_sample_value("lastmile_streams_open", labels) == 0

    await async_wait_until(closed, within=5, what="the stream counted as closed")


async def test_streaming_unexpected_error_is_internal(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.WatchOrders(order_service_pb2.WatchOrdersRequest(order_ids=["crash"]))
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


async def test_the_caller_is_bound_from_the_bearer_token(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    request = order_service_pb2.GetOrderRequest(order_id="o-1")
    reply = await stub.GetOrder(request, metadata=_bearer(Role.DISPATCHER))
    assert (reply.order.order_id, reply.order.tenant_id) == ("o-1", "tenant-a")

    code, message = await _status(stub.GetOrder(request, metadata=_bearer(Role.DRIVER)))
    assert (code, message) == (grpc.StatusCode.PERMISSION_DENIED, "role driver may not do this")

    for metadata in (None, [("authorization", "Bearer not-a-token")]):
        code, message = await _status(stub.GetOrder(request, metadata=metadata))
        assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "this call needs a token")


async def test_an_over_long_message_is_cut(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    # The status travels in HTTP/2 trailers: a message quoting a long text of the request
    # (2,048 characters of two bytes each) would reset the stream.
    request = order_service_pb2.ReportFailedAttemptRequest(
        order_id="o-1", note="é" * MAX_TEXT_CHARS
    )
    code, details = await _status(stub.ReportFailedAttempt(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("cannot record: éé") and details.endswith("...")
    assert len(details.encode()) <= MAX_DETAILS_BYTES + 3


async def test_over_long_text_is_refused_before_the_handler(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.GetOrder(order_service_pb2.GetOrderRequest(order_id="missing" + "é" * 50_000))
    assert await _status(call) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"order_id is longer than {MAX_ID_CHARS} characters (50007)",
    )


async def test_text_with_nul_is_refused_before_the_handler(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    call = stub.GetOrder(order_service_pb2.GetOrderRequest(order_id="missing\x00"))
    assert await _status(call) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "order_id must not contain NUL characters",
    )
    stream = stub.WatchOrders(order_service_pb2.WatchOrdersRequest(order_ids=["o-1", "o-\x00"]))
    assert await _status(stream.read()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "order_ids must not contain NUL characters",
    )


async def test_bytes_that_are_no_message_are_invalid_argument(channel: aio.Channel) -> None:
    # grpc itself answers UNKNOWN, naming the exception's class.
    unary: Any = channel.unary_unary(f"/{SERVICE}/GetOrder", None, None)
    stream: Any = channel.unary_stream(f"/{SERVICE}/WatchOrders", None, None)
    outcomes = {
        "GetOrder": await _status(unary(NOT_A_MESSAGE)),
        "WatchOrders": await _status(stream(NOT_A_MESSAGE).read()),
    }
    for path, (code, details) in outcomes.items():
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, code, details)
        assert details == (
            "the request is not a valid message (Error parsing message with type"
            f" 'lastmile.dispatch.v1.{path}Request')"
        )


async def test_a_call_closed_without_its_request_is_invalid_argument(channel: aio.Channel) -> None:
    # A client stream with no message, sent to single-request RPCs: grpc alone never answers.
    unary: Any = channel.stream_unary(f"/{SERVICE}/GetOrder", None, None)
    stream: Any = channel.stream_stream(f"/{SERVICE}/WatchOrders", None, None)
    for call in (unary(iter([]), timeout=5), stream(iter([]), timeout=5).read()):
        assert await _status(call) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request has no complete message: the call ended before one",
        )
