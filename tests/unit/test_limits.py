"""The in-process limits (core.ratelimit, gateway.streams) and load shedding of a real grpc.aio
server built by core.runtime.ServiceHost: unary calls beyond the in-flight limit and RPCs
beyond the server's concurrency limit get RESOURCE_EXHAUSTED; health checks are never shed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lastmile.dispatch.v1 import order_service_pb2, order_service_pb2_grpc

from core.errors import Aborted, ResourceExhausted
from core.ratelimit import InflightGate, KeyedRateLimiter, StreamSlots
from core.runtime import ServiceHost, Servicer
from core.settings import Settings
from gateway.streams import StreamRegistry
from tests.helpers import async_wait_until


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(rate_per_s=2.0, burst=3, max_keys=10, clock=clock)
    assert [limiter.allow("d1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("d2")  # per key
    clock.now += 0.5  # one token back at 2/s
    assert limiter.allow("d1") and not limiter.allow("d1")
    clock.now += 100  # refills up to the burst only
    assert [limiter.allow("d1") for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ResourceExhausted, match="driver d1"):
        limiter.check("d1", "driver d1")


def test_keyed_limiter_forgets_the_least_recently_seen() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(rate_per_s=0.001, burst=1, max_keys=2, clock=clock)
    assert limiter.allow("a") and limiter.allow("b")
    assert not limiter.allow("a")  # a is now the most recent
    assert limiter.allow("c")  # b is forgotten
    assert not limiter.allow("a")
    assert limiter.allow("b")  # a new bucket: forgetting errs towards allowing


def test_stream_slots_count_open_streams_per_key() -> None:
    slots = StreamSlots(limit=2)
    with slots.hold("t", "link"), slots.hold("t", "link"):
        assert slots.count("t") == 2
        with pytest.raises(ResourceExhausted, match="at most 2"), slots.hold("t", "link"):
            pass
        with slots.hold("u", "link"):
            assert slots.count("u") == 1
    assert slots.count("t") == 0


def test_inflight_gate() -> None:
    gate = InflightGate(limit=1)
    assert gate.enter() and not gate.enter()
    gate.leave()
    assert gate.enter()


def test_a_new_driver_stream_ends_the_oldest() -> None:
    registry = StreamRegistry(limit=1)
    ended: list[BaseException] = []
    close_first = registry.open("d", ended.append)
    registry.open("d", lambda exc: pytest.fail("the newest stream must stay"))
    assert len(ended) == 1 and isinstance(ended[0], Aborted)
    close_first()  # the ended stream unregistering late changes nothing
    assert registry.count("d") == 1
    registry.open("e", lambda exc: pytest.fail("another driver is not touched"))
    assert registry.count("e") == 1


class SlowOrders(order_service_pb2_grpc.OrderServiceServicer):
    """GetOrder waits until released; WatchOrders stays open until cancelled."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0

    async def GetOrder(self, request: Any, context: Any) -> Any:
        self.inside += 1
        await self.release.wait()
        return order_service_pb2.GetOrderResponse()

    async def WatchOrders(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield order_service_pb2.WatchOrdersResponse()
        await asyncio.Event().wait()


def _inside(servicer: SlowOrders) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return servicer.inside >= 1

    return check


async def _host(settings: Settings, servicer: SlowOrders) -> tuple[ServiceHost, int]:
    component = Servicer(
        servicer,
        order_service_pb2_grpc.add_OrderServiceServicer_to_server,
        "lastmile.dispatch.v1.OrderService",
    )
    host = ServiceHost("dispatch", settings, 0, [component])
    return host, await host.start()


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_unary_calls_beyond_the_inflight_limit_are_shed() -> None:
    settings = Settings().replace(server_max_inflight_unary=1, shutdown_grace_s=0.1)
    servicer = SlowOrders()  # type: ignore[abstract]
    host, port = await _host(settings, servicer)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            orders = order_service_pb2_grpc.OrderServiceStub(channel)
            request = order_service_pb2.GetOrderRequest(order_id="o")
            first = asyncio.ensure_future(orders.GetOrder(request, timeout=10))
            await async_wait_until(_inside(servicer), within=10, what="the first call inside")
            assert await _code(orders.GetOrder(request, timeout=10)) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING  # never shed
            servicer.release.set()
            await first
            await orders.GetOrder(request, timeout=10)  # room again
    finally:
        await host.stop()


async def test_rpcs_beyond_the_server_concurrency_limit_are_refused() -> None:
    settings = Settings().replace(server_max_concurrent_rpcs=2, shutdown_grace_s=0.1)
    servicer = SlowOrders()  # type: ignore[abstract]
    servicer.release.set()
    host, port = await _host(settings, servicer)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            orders = order_service_pb2_grpc.OrderServiceStub(channel)
            watches = [orders.WatchOrders(order_service_pb2.WatchOrdersRequest()) for _ in range(2)]
            for watch in watches:
                await watch.read()  # both streams are open
            request = order_service_pb2.GetOrderRequest(order_id="o")
            assert await _code(orders.GetOrder(request, timeout=10)) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            watches[0].cancel()

            async def answered() -> bool:  # refused until the server has freed the place
                await orders.GetOrder(request, timeout=10)
                return True

            await async_wait_until(answered, within=10, what="a place to free up")
            watches[1].cancel()
    finally:
        await host.stop()


PROJECT_ROOT = Path(__file__).resolve().parents[2]
BURST = 1500  # more than gRPC core's own default limit of pending calls (1,000)


async def _burst_while_busy(pending_calls: int | None) -> list[str]:
    """Open BURST streams while the server's loop is blocked; how each one ended up."""
    env = dict(os.environ)
    if pending_calls is not None:
        env["LASTMILE_SERVER_MAX_PENDING_CALLS"] = str(pending_calls)
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.busy_server",
        "2.0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert server.stdin is not None and server.stdout is not None
    channels: list[aio.Channel] = []
    try:
        port = int(await asyncio.wait_for(server.stdout.readline(), 60))
        channels = [
            aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(BURST // 200)
        ]
        for channel in channels:
            await channel.channel_ready()
        server.stdin.write(b"stall\n")
        await server.stdin.drain()
        await asyncio.sleep(0.3)  # the loop is blocked now

        async def open_one(index: int) -> str:
            stub = order_service_pb2_grpc.OrderServiceStub(channels[index % len(channels)])
            call = stub.WatchOrders(order_service_pb2.WatchOrdersRequest())
            try:
                await asyncio.wait_for(call.read(), 30)
                return "open"
            except aio.AioRpcError as exc:
                return exc.code().name
            finally:
                call.cancel()

        return list(await asyncio.gather(*(open_one(i) for i in range(BURST))))
    finally:
        for channel in channels:
            await channel.close(None)
        server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()


async def test_a_burst_of_streams_waits_for_a_busy_server_instead_of_failing() -> None:
    """Apps reconnecting together (a gateway restarted) while the loop is busy: every stream
    opens once the loop is free, where gRPC core's own limit would have dropped some."""
    outcomes = await _burst_while_busy(None)
    assert Counter(outcomes) == {"open": BURST}


async def test_past_the_pending_calls_limit_new_calls_are_shed() -> None:
    """The setting reaches gRPC core: with a small limit, a burst is partly refused."""
    outcomes = Counter(await _burst_while_busy(50))
    assert outcomes["open"] < BURST / 2, outcomes
