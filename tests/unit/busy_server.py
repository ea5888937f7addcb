"""A real ServiceHost whose event loop stops taking calls on request, for tests of what gRPC
core does with calls that arrive meanwhile (tests/unit/test_limits.py).

Run as ``python -m tests.unit.busy_server STALL_S`` with the settings in the environment: it
prints its port, and at each line on stdin blocks its loop for STALL_S seconds; it stops when
stdin closes. WatchOrders answers once, then stays open.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from lastmile.dispatch.v1 import order_service_pb2, order_service_pb2_grpc

from core.runtime import ServiceHost, Servicer
from core.settings import Settings


class OpenWatches(order_service_pb2_grpc.OrderServiceServicer):
    """WatchOrders: one response, then open until cancelled."""

    async def WatchOrders(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield order_service_pb2.WatchOrdersResponse()
        await asyncio.Event().wait()


async def main(stall_s: float) -> None:
    settings = Settings.from_env().replace(shutdown_grace_s=0.1)
    component = Servicer(
        OpenWatches(),  # type: ignore[abstract]
        order_service_pb2_grpc.add_OrderServiceServicer_to_server,
        "lastmile.dispatch.v1.OrderService",
    )
    host = ServiceHost("dispatch", settings, 0, [component])
    print(await host.start(), flush=True)
    while await asyncio.to_thread(sys.stdin.readline):
        # Blocking on purpose: the loop takes no call meanwhile.
        time.sleep(stall_s)  # noqa: ASYNC251
        print("stalled", flush=True)
    await host.stop()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1])))
