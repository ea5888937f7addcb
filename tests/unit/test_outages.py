"""A dependency outage is told apart from a bug: ``core.outages.is_outage``, and the service
interceptor answering UNAVAILABLE (retry) for the one and INTERNAL for the other, checked on
an in-process grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
import redis.exceptions
from grpc import aio
from lastmile.dispatch.v1 import order_service_pb2, order_service_pb2_grpc

from core.interceptors import ServiceInterceptor
from core.outages import is_outage
from core.settings import Settings


def _raised_from(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
        _raised_from(redis.exceptions.ConnectionError("gone")),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_outages_are_recognised(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        KeyError("missing"),
        RuntimeError("a bug"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.InterfaceError("cannot use Connection.transaction() in a manually"),
        _raised_from(KeyError("missing")),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_bugs_are_not_outages(exc: BaseException) -> None:
    assert not is_outage(exc)


class Orders(order_service_pb2_grpc.OrderServiceServicer):
    """GetOrder fails as during a Redis restart; ListOrders with a bug."""

    async def GetOrder(self, request: Any, context: Any) -> Any:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    async def ListOrders(self, request: Any, context: Any) -> Any:
        raise ValueError("a bug")


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[aio.Channel]:
    """A client channel to an in-process server with the interceptor."""
    server = aio.server(interceptors=[ServiceInterceptor(Settings(), "dispatch")])
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(Orders(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close(None)
        await server.stop(None)


async def test_an_outage_answers_unavailable_and_a_bug_internal(channel: aio.Channel) -> None:
    stub = order_service_pb2_grpc.OrderServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as outage:
        await stub.GetOrder(order_service_pb2.GetOrderRequest(order_id="o-1"))
    assert outage.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry" in (outage.value.details() or "")
    # Nothing of the dependency's address leaks to the caller.
    assert "6379" not in (outage.value.details() or "")
    with pytest.raises(aio.AioRpcError) as bug:
        await stub.ListOrders(order_service_pb2.ListOrdersRequest())
    assert bug.value.code() == grpc.StatusCode.INTERNAL
