"""gRPC floor benchmark: what Python gRPC alone costs per driver message on this box.

The tracking benchmark's 1-fix-per-message target is a message rate through Python gRPC on
both ends of one box (the load generator's client and the gateway's server). This measures
that part with nothing else in the way: a server speaking the real ``DriverGatewayService``
contract that acks each ``ConnectRequest`` at once (no validation, no Redis: a floor no
gateway can go under), and a client holding ``--streams`` streams over ``CHANNELS`` channels,
each sending its next location message as soon as the previous one is acked (one message in
flight per stream, as the tracking benchmark's flood phases do). The client is written the
cheapest way grpcio aio offers (``write``/``read`` on the call, no request iterator), the
server the way the gateway is (an async generator over the requests).

Reports, for each message size: messages and fixes acked per second, CPU microseconds per
message on each side (from /proc), how busy the box was, and the ceiling that follows: 2
cores divided by the two sides' cost per message, for a pipeline that would do nothing else.

Bounded: ``--seconds`` per size. The server is a child process stopped by its PID. Prints a
table, writes bench/results/grpc_floor.json::

    .venv/bin/python -m bench.grpc_floor --streams 1000 --seconds 20 --fixes 1,5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc

from bench.cpu_use import busy_cores_seconds, cpu_seconds
from core.settings import PROJECT_ROOT
from ops.servers.process import free_port

RESULTS = PROJECT_ROOT / "bench" / "results" / "grpc_floor.json"
CHANNELS = 8
READY_S = 30.0
Request = driver_service_pb2.ConnectRequest
Response = driver_service_pb2.ConnectResponse
Connect = aio.StreamStreamCall[Request, Response]


class AckEverything(driver_service_pb2_grpc.DriverGatewayServiceServicer):
    """Acks every request with its seq, nothing else."""

    async def Connect(
        self, request_iterator: AsyncIterator[Request], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        """One Ack per request, in order."""
        async for request in request_iterator:
            yield Response(ack=driver_pb2.Ack(seq=request.seq))


async def serve(port: int) -> None:
    """The floor server on loopback until killed."""
    server = aio.server()
    driver_service_pb2_grpc.add_DriverGatewayServiceServicer_to_server(AckEverything(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _message(fixes: int) -> driver_pb2.LocationBatch:
    """A location batch of ``fixes`` fixes, filled as a driver app fills them."""
    batch = driver_pb2.LocationBatch()
    for k in range(fixes):
        fix = batch.fixes.add(accuracy_m=5.0, speed_mps=8.0, heading_deg=90.0)
        fix.position.lat, fix.position.lng = 35.9 + k * 1e-5, 14.5
        fix.captured_at.FromMicroseconds(int(time.time() * 1e6))
    return batch


async def _stream(
    stub: driver_service_pb2_grpc.DriverGatewayServiceStub,
    batch: driver_pb2.LocationBatch,
    until: float,
    acked: list[int],
) -> None:
    """One stream: the next message once the previous one is acked, until ``until``."""
    # No request iterator: the cheapest form (the generated types miss it).
    call: Connect = stub.Connect()  # type: ignore[call-arg, assignment]
    seq = 0
    try:
        while time.monotonic() < until:
            seq += 1
            await call.write(Request(seq=seq, locations=batch))
            response = await call.read()
            if not isinstance(response, Response) or response.ack.seq != seq:
                raise RuntimeError(f"expected the ack of seq {seq}, got {response!r}")
            acked[0] += 1
        await call.done_writing()
    finally:
        call.cancel()


async def _flood(port: int, streams: int, batch: driver_pb2.LocationBatch, until: float) -> int:
    """Every stream until ``until``; returns the messages acked."""
    channels = [aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    try:
        stubs = [driver_service_pb2_grpc.DriverGatewayServiceStub(c) for c in channels]
        acked = [0]
        await asyncio.gather(
            *(_stream(stubs[i % CHANNELS], batch, until, acked) for i in range(streams))
        )
        return acked[0]
    finally:
        for channel in channels:
            await channel.close(None)


async def measure(
    port: int, server_pid: int, streams: int, fixes: int, seconds: float
) -> dict[str, Any]:
    """One message size: ``streams`` streams flooding for ``seconds``."""
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # the server may be starting
        await asyncio.wait_for(channel.channel_ready(), READY_S)
    batch = _message(fixes)
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    busy, total = busy_cores_seconds()
    started = time.monotonic()
    messages = await _flood(port, streams, batch, started + seconds)
    elapsed = time.monotonic() - started
    server_cpu = cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    busy_after, total_after = busy_cores_seconds()
    server_us, client_us = server_cpu / messages * 1e6, client_cpu / messages * 1e6
    cores = os.cpu_count() or 1
    return {
        "streams": streams,
        "fixes_per_message": fixes,
        "seconds": round(elapsed, 1),
        "messages_per_s": round(messages / elapsed),
        "fixes_per_s": round(messages * fixes / elapsed),
        "server_cpu_us_per_message": round(server_us, 1),
        "client_cpu_us_per_message": round(client_us, 1),
        "server_cores": round(server_cpu / elapsed, 2),
        "client_cores": round(client_cpu / elapsed, 2),
        "box_busy_cores": round((busy_after - busy) / (total_after - total) * cores, 2),
        # A pipeline that did nothing but this, on every core of the box.
        "ceiling_messages_per_s": round(cores * 1e6 / (server_us + client_us)),
    }


def table(phases: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| fixes/message | messages/s | fixes/s | server µs/msg | client µs/msg | box busy"
        " (cores) | ceiling messages/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        lines.append(
            f"| {p['fixes_per_message']} | {p['messages_per_s']} | {p['fixes_per_s']} |"
            f" {p['server_cpu_us_per_message']} | {p['client_cpu_us_per_message']} |"
            f" {p['box_busy_cores']} | {p['ceiling_messages_per_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Start the floor server, measure each message size, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fixes", default="1,5", help="fixes per message, comma-separated")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's port
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", str(port)])
    try:
        phases = [
            asyncio.run(measure(port, server.pid, args.streams, int(size), args.seconds))
            for size in args.fixes.split(",")
        ]
    finally:
        server.kill()
        server.wait()
    with open("/proc/cpuinfo") as info:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), ""
        )
    outcome = {
        "benchmark": "grpc_floor",
        "machine": {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()},
        "setup": "ack-only DriverGatewayService server (1 process) + client (1 process), loopback",
        "phases": phases,
    }
    print(table(phases))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")


if __name__ == "__main__":
    main()
