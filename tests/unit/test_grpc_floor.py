"""The gRPC floor benchmark measures real acks over a real gRPC server on loopback, checks that
each ack is the one it waited for, and derives its per-message costs from what it counted."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio
from lastmile.driver.v1 import driver_pb2, driver_service_pb2_grpc

from bench import grpc_floor
from ops.servers.process import free_port


async def _serve(
    servicer: driver_service_pb2_grpc.DriverGatewayServiceServicer,
) -> tuple[aio.Server, int]:
    server = aio.server()
    driver_service_pb2_grpc.add_DriverGatewayServiceServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def test_a_run_counts_acked_messages_and_their_cost() -> None:
    server, port = await _serve(grpc_floor.AckEverything())
    try:
        # Server and client share this process here: its pid stands for the server's.
        result = await grpc_floor.measure(port, os.getpid(), streams=20, fixes=3, seconds=1.0)
    finally:
        await server.stop(None)

    assert result["messages_per_s"] > 100, result
    assert abs(result["fixes_per_s"] - 3 * result["messages_per_s"]) <= 3, result
    assert result["server_cpu_us_per_message"] > 0 and result["client_cpu_us_per_message"] > 0
    per_message = result["server_cpu_us_per_message"] + result["client_cpu_us_per_message"]
    expected = (os.cpu_count() or 1) * 1e6 / per_message
    assert abs(result["ceiling_messages_per_s"] - expected) <= 0.01 * expected + 1, result
    assert "| 3 |" in grpc_floor.table([result])


class _AcksTheWrongSeq(driver_service_pb2_grpc.DriverGatewayServiceServicer):
    async def Connect(
        self, request_iterator: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in request_iterator:
            yield grpc_floor.Response(ack=driver_pb2.Ack(seq=request.seq + 1))


async def test_an_ack_of_another_message_fails_the_run() -> None:
    server, port = await _serve(_AcksTheWrongSeq())
    try:
        with pytest.raises(RuntimeError, match="expected the ack of seq 1"):
            await grpc_floor.measure(port, os.getpid(), streams=2, fixes=1, seconds=1.0)
    finally:
        await server.stop(None)
