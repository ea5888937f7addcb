"""Ingest benchmark: N driver streams through a real gateway into a real tracking processor.

Starts its own Redis and PostgreSQL (temporary dirs, free loopback ports), one gateway and one
tracking process, then for each batch size runs N streams that send batches as fast as acks
come back (one batch in flight per stream) for a fixed time, and measures:

* acked fixes/s (client side) over the run,
* processed fixes/s: rows landed in location_history (live state is written in the same round)
  over the same window, and whether every acked fix was in history after a drain.

Bounded: stops by itself after ``--seconds`` per batch size. Prints JSON and a short table,
writes bench/results/ingest.json. Usage::

    .venv/bin/python -m bench.ingest --streams 1000 --seconds 30 --batches 1,10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from typing import Any

import asyncpg
from grpc import aio
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc

from bench.servers import own_servers
from core.auth import Role, issue_token
from core.settings import PROJECT_ROOT, Settings
from ops.stack import service_process, start_service

RESULTS = PROJECT_ROOT / "bench" / "results" / "ingest.json"
CHANNELS = 8
Request = driver_service_pb2.ConnectRequest


def machine() -> dict[str, Any]:
    """nproc and CPU model."""
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


async def drive(
    client: Any, settings: Settings, driver: str, size: int, until: float, counts: list[int]
) -> None:
    """One driver app: Hello, then batches back to back until ``until``."""
    token = issue_token(settings, driver, Role.DRIVER, "bench")
    queue: asyncio.Queue[Request | None] = asyncio.Queue()

    async def requests() -> Any:
        while (item := await queue.get()) is not None:
            yield item

    call = client.Connect(requests(), metadata=(("authorization", f"Bearer {token}"),))
    await queue.put(Request(seq=0, hello=driver_pb2.Hello(device_id=driver)))
    responses = aiter(call)
    await anext(responses)
    rng = random.Random(driver)
    base_us = int((time.time() - 3600) * 1e6)
    lat, lng = 35.89 + rng.random() * 0.03, 14.48 + rng.random() * 0.04
    seq, k = 0, 0
    while time.monotonic() < until:
        seq += 1
        fixes = []
        for _ in range(size):
            k += 1
            fix = fixes_template(lat + k * 1e-6, lng, base_us + k * 1000)
            fixes.append(fix)
        await queue.put(Request(seq=seq, locations=driver_pb2.LocationBatch(fixes=fixes)))
        response = await anext(responses)
        if response.WhichOneof("command") == "ack":
            counts[0] += size
    await queue.put(None)
    call.cancel()


def fixes_template(lat: float, lng: float, at_us: int) -> Any:
    """One fix."""
    from lastmile.common.v1 import common_pb2

    fix = common_pb2.GpsFix(accuracy_m=5.0, speed_mps=8.0, heading_deg=90.0)
    fix.position.lat, fix.position.lng = lat, lng
    fix.captured_at.FromMicroseconds(at_us)
    return fix


async def history_count(dsn: str) -> int:
    """Rows in location_history."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM location_history"))
    finally:
        await conn.close()


async def run_phase(settings: Settings, streams: int, size: int, seconds: float) -> dict[str, Any]:
    """One batch size: N streams for ``seconds``; then wait for the processor to drain."""
    address = f"{settings.host}:{settings.gateway_port}"
    channels = [aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [driver_service_pb2_grpc.DriverGatewayServiceStub(c) for c in channels]
    counts = [0]
    before = await history_count(settings.database_url)
    started = time.monotonic()
    until = started + seconds
    tag = f"b{size}-{int(time.time())}"
    tasks = [
        asyncio.create_task(
            drive(stubs[i % CHANNELS], settings, f"bench-{tag}-{i}", size, until, counts)
        )
        for i in range(streams)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    processed_in_window = await history_count(settings.database_url) - before
    drain_started = time.monotonic()
    drained = processed_in_window
    while drained < counts[0] and time.monotonic() - drain_started < 60:
        await asyncio.sleep(0.5)
        drained = await history_count(settings.database_url) - before
    for channel in channels:
        await channel.close(None)
    return {
        "streams": streams,
        "fixes_per_batch": size,
        "seconds": round(elapsed, 1),
        "acked_fixes": counts[0],
        "acked_fixes_per_s": round(counts[0] / elapsed),
        "acked_batches_per_s": round(counts[0] / size / elapsed),
        "processed_fixes_per_s_in_window": round(processed_in_window / elapsed),
        "all_acked_in_history_after_drain": drained >= counts[0],
        "drain_s": round(time.monotonic() - drain_started, 1),
        "stream_errors": len(errors),
        "first_error": repr(errors[0])[:200] if errors else None,
    }


async def bench(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    """Every requested batch size in turn."""
    return [
        await run_phase(settings, args.streams, size, args.seconds)
        for size in (int(s) for s in args.batches.split(","))
    ]


def main() -> None:
    """Start the servers and services, run, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batches", default="1,10")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    processes = []
    with own_servers("lastmile-bench-ingest-") as servers:
        # Streams send as fast as acks come on purpose: the per-driver rate limit would
        # measure itself.
        settings = servers.settings.replace(
            gateway_driver_rate_per_s=1e6, gateway_driver_burst=1_000_000
        )
        logs = servers.base / "logs"
        try:
            for name in ("tracking", "gateway"):
                process = service_process(name, settings, logs)
                start_service(process, f"{settings.host}:{settings.port_of(name)}")
                processes.append(process)
            phases = asyncio.run(bench(args, settings))
            for name in ("gateway", "tracking"):
                text = (logs / f"{name}.log").read_text(errors="replace")
                print(f"--- {name} log: {text.count('unhandled error')} unhandled errors")
                index = text.find("unhandled error")
                if index >= 0:
                    print(text[index : index + 3000])
        finally:
            for process in reversed(processes):
                process.stop(grace=10.0)
    report = {
        "benchmark": "ingest",
        "machine": machine(),
        "setup": "1 gateway + 1 tracking process + load generator (1 process) on one box, loopback",
        "phases": phases,
    }
    print(json.dumps(report, indent=2))
    print(f"\nmachine: {report['machine']}")
    print(
        f"{'streams':>8} {'fix/batch':>9} {'acked fix/s':>12} {'processed fix/s':>16} {'drained':>8}"
    )
    for p in phases:
        print(
            f"{p['streams']:>8} {p['fixes_per_batch']:>9} {p['acked_fixes_per_s']:>12}"
            f" {p['processed_fixes_per_s_in_window']:>16} {p['all_acked_in_history_after_drain']!s:>8}"
        )
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
