"""Tracking-interval change benchmark: how long until every connected driver app has a tenant's
new intervals after ``FleetService.UpdateTrackingIntervals`` returns.

Starts its own Redis and PostgreSQL (temporary dirs, free loopback ports), ``--gateways``
gateway processes sharing one port and one tracking process, opens ``--streams`` driver
streams of one tenant (Hello, Welcome, then idle) from one load process, and makes
``--changes`` changes one after another. For each: the RPC's latency, and per stream the time
from the call to the arrival of the new TrackingConfig (p50/p95/p99/max), and how many streams
got it within ``--timeout`` seconds. The load process receives every config itself, so the
spread includes its own queueing on the same two cores.

Bounded: each change waits at most ``--timeout`` s. Prints JSON and a short table, writes
bench/results/tracking_intervals.json (``--no-record``: prints only). Usage::

    .venv/bin/python -m bench.tracking_intervals --streams 20000 --changes 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc import aio
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc
from lastmile.tracking.v1 import fleet_service_pb2, fleet_service_pb2_grpc, tracking_pb2

from bench.ingest import machine
from bench.servers import own_servers
from bench.tracking_report import percentiles
from core.auth import Role, issue_token
from core.settings import PROJECT_ROOT, Settings
from ops.stack import service_process, start_service

RESULTS = PROJECT_ROOT / "bench" / "results" / "tracking_intervals.json"
TENANT = "bench"
CHANNELS = 16
Request = driver_service_pb2.ConnectRequest


class Streams:
    """Idle driver streams that stamp the arrival of each tracking config they get."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._count = count
        self._channels: list[aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.welcomed = 0
        # Per stream: arrival times (monotonic) of the configs after Welcome.
        self.arrivals: list[list[float]] = [[] for _ in range(count)]
        self.errors: list[str] = []
        self._settled = asyncio.Event()  # every stream welcomed or failed

    async def open(self, ramp_s: float) -> None:
        """Open every stream over ``ramp_s`` and wait for their Welcomes."""
        address = f"{self._settings.host}:{self._settings.gateway_port}"
        self._channels = [aio.insecure_channel(address) for _ in range(CHANNELS)]
        for i in range(self._count):
            stub = driver_service_pb2_grpc.DriverGatewayServiceStub(self._channels[i % CHANNELS])
            self._tasks.append(asyncio.create_task(self._stream(stub, i)))
            if i % 100 == 99:
                await asyncio.sleep(ramp_s * 100 / self._count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), 60)

    async def close(self) -> None:
        """Cancel the streams."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close(None)

    async def _stream(self, stub: Any, index: int) -> None:
        driver = f"bench-drv-{index}"
        token = issue_token(self._settings, driver, Role.DRIVER, TENANT)
        hello = Request(seq=0, hello=driver_pb2.Hello(device_id=driver))
        done = asyncio.Event()

        async def requests() -> Any:
            yield hello
            await done.wait()

        try:
            call = stub.Connect(requests(), metadata=(("authorization", f"Bearer {token}"),))
            async for response in call:
                kind = response.WhichOneof("command")
                if kind == "welcome":
                    self.welcomed += 1
                    self._settle()
                elif kind == "tracking_config":
                    self.arrivals[index].append(time.monotonic())
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self.errors.append(f"{exc.code()}: {exc.details()}")
            self._settle()

    def _settle(self) -> None:
        if self.welcomed + len(self.errors) >= self._count:
            self._settled.set()


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


async def change(
    fleet: Any, token: str, streams: Streams, number: int, timeout_s: float
) -> dict[str, Any]:
    """One change of the passive intervals; when each open stream got it."""
    seen = [len(a) for a in streams.arrivals]
    capture = 30.0 + number  # a new value each change
    intervals = tracking_pb2.TrackingIntervals(
        passive_capture_interval=_seconds(capture), passive_upload_interval=_seconds(capture * 4)
    )
    started = time.monotonic()
    await fleet.UpdateTrackingIntervals(
        fleet_service_pb2.UpdateTrackingIntervalsRequest(intervals=intervals),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=30,
    )
    answered = time.monotonic()
    expected = streams.welcomed
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        got = sum(1 for i, a in enumerate(streams.arrivals) if len(a) > seen[i])
        if got >= expected:
            break
        await asyncio.sleep(0.05)
    delays = [a[seen[i]] - started for i, a in enumerate(streams.arrivals) if len(a) > seen[i]]
    return {
        "streams_open": expected,
        "streams_told": len(delays),
        "rpc_ms": round((answered - started) * 1000, 1),
        **percentiles(delays),
    }


async def bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Open the streams, make the changes, close."""
    streams = Streams(settings, args.streams)
    opened = time.monotonic()
    await streams.open(args.ramp)
    open_s = time.monotonic() - opened
    token = issue_token(settings, "bench-ops", Role.SERVICE, TENANT)
    changes = []
    async with aio.insecure_channel(f"{settings.host}:{settings.tracking_port}") as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        for number in range(1, args.changes + 1):
            await asyncio.sleep(args.pause)
            changes.append(await change(fleet, token, streams, number, args.timeout))
    await streams.close()
    return {
        "streams": args.streams,
        "welcomed": streams.welcomed,
        "open_s": round(open_s, 1),
        "stream_errors": len(streams.errors),
        "first_error": streams.errors[0] if streams.errors else None,
        "changes": changes,
    }


def main() -> None:
    """Start the servers and services, run, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds to open the streams")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds before each change")
    parser.add_argument("--timeout", type=float, default=30.0, help="most seconds per change")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    processes = []
    with own_servers("lastmile-bench-intervals-") as servers:
        settings = servers.settings
        try:
            tracking = service_process("tracking", settings, servers.base / "logs")
            start_service(tracking, f"{settings.host}:{settings.tracking_port}")
            processes.append(tracking)
            for _ in range(args.gateways):
                gateway = service_process("gateway", settings, servers.base / "logs")
                start_service(gateway, f"{settings.host}:{settings.gateway_port}")
                processes.append(gateway)
            result = asyncio.run(bench(args, settings))
        finally:
            for process in reversed(processes):
                process.stop(grace=10.0)
    report = {
        "benchmark": "tracking_intervals",
        "machine": machine(),
        "setup": f"{args.gateways} gateway(s) + 1 tracking process + load generator (1 process)"
        " on one box, loopback; idle streams of one tenant",
        **result,
    }
    print(json.dumps(report, indent=2))
    print(f"\nmachine: {report['machine']}")
    print(f"{'streams':>8} {'told':>6} {'rpc ms':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}")
    for c in result["changes"]:
        print(
            f"{c['streams_open']:>8} {c['streams_told']:>6} {c['rpc_ms']:>7} {c['p50_ms']!s:>6}"
            f" {c['p95_ms']!s:>6} {c['p99_ms']!s:>6} {c['max_ms']!s:>6}"
        )
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
