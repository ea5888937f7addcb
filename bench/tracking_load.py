"""Load-generator workers of the tracking benchmark, one per process (Python is the limit):
driver apps on the gateway's Connect stream and customers on Track streams.

Each worker runs one asyncio loop until its deadline and returns a plain dict. Every loop is
bounded by that deadline; nothing retries forever.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from grpc import aio
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc
from lastmile.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

CHANNELS_PER_WORKER = 8
STEP_DEG = 5e-5  # per fix on each axis: ~8 m diagonally
Request = driver_service_pb2.ConnectRequest


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (thousands of sockets); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _zigzag(value: float, span: float) -> float:
    """``value`` folded into 0..span and back (a triangle wave)."""
    phase = value % (2 * span)
    return phase if phase <= span else 2 * span - phase


def _fix(lat: float, lng: float, at_s: float) -> common_pb2.GpsFix:
    fix = common_pb2.GpsFix(accuracy_m=5.0, speed_mps=8.0, heading_deg=90.0)
    fix.position.lat, fix.position.lng = lat, lng
    fix.captured_at.FromMicroseconds(int(at_s * 1e6))
    return fix


async def _driver(
    client: Any,
    driver: str,
    bearer: str,
    start: tuple[float, float],
    mode: str,
    size: int,
    interval_s: float,
    deadline: float,
    counts: dict[str, int],
) -> None:
    """One driver app: Hello, then (flood) batches back to back, (rate) one batch of ``size``
    every ``interval_s``, or (hold) nothing, until ``deadline``."""
    queue: asyncio.Queue[Request | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[Request]:
        while (item := await queue.get()) is not None:
            yield item

    call = client.Connect(requests(), metadata=(("authorization", f"Bearer {bearer}"),))
    try:
        await queue.put(Request(seq=0, hello=driver_pb2.Hello(device_id=driver)))
        responses = aiter(call)
        await anext(responses)
        counts["connected"] += 1
        if mode == "hold":
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            counts["held"] += 1
            return
        lat, lng = start
        seq, k = 0, 0
        rng = random.Random(driver)
        if mode == "rate":
            await asyncio.sleep(rng.random() * interval_s)
        while time.monotonic() < deadline:
            began = time.monotonic()
            seq += 1
            now = time.time()
            fixes = []
            for i in range(size):
                k += 1
                # One fix a second at ~8 m/s, back and forth over ~1 km: ETAs refresh by
                # distance as often as for a real driver per fix.
                at = now - (size - 1 - i) * 1.0
                offset = _zigzag(k * STEP_DEG, 0.01)
                fixes.append(_fix(lat + offset, lng + offset, at))
            await queue.put(Request(seq=seq, locations=driver_pb2.LocationBatch(fixes=fixes)))
            response = await anext(responses)
            if response.WhichOneof("command") == "ack":
                counts["fixes"] += size
            if mode == "rate":
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - began)))
    except Exception:
        if time.monotonic() < deadline:
            raise
        counts["ended_at_deadline"] += 1  # the batch in flight when the phase ended
    finally:
        await queue.put(None)
        call.cancel()


def drivers_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Driver streams of one process (``job``: address, drivers [(id, bearer, lat, lng)],
    mode, size, interval_s, seconds, ramp_s)."""
    raise_fd_limit()
    return asyncio.run(_drivers(job))


async def _drivers(job: dict[str, Any]) -> dict[str, Any]:
    channels = [aio.insecure_channel(job["address"]) for _ in range(CHANNELS_PER_WORKER)]
    stubs = [driver_service_pb2_grpc.DriverGatewayServiceStub(c) for c in channels]
    counts = {"connected": 0, "held": 0, "fixes": 0, "ended_at_deadline": 0}
    ramp = float(job.get("ramp_s", 0.0))
    deadline = time.monotonic() + ramp + job["seconds"]
    tasks = []
    for i, (driver, bearer, lat, lng) in enumerate(job["drivers"]):
        if ramp and i % 200 == 0:
            await asyncio.sleep(ramp * 200 / max(1, len(job["drivers"])))
        tasks.append(
            asyncio.create_task(
                _driver(
                    stubs[i % len(stubs)],
                    driver,
                    bearer,
                    (lat, lng),
                    job["mode"],
                    job["size"],
                    job["interval_s"],
                    deadline,
                    counts,
                )
            )
        )
    started = time.monotonic()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for channel in channels:
        await channel.close(None)
    return {
        **counts,
        "seconds": time.monotonic() - started,
        "errors": len(errors),
        "first_error": repr(errors[0])[:300] if errors else None,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


async def _customer(
    client: Any, token: str, deadline: float, counts: dict[str, int], latencies: list[float]
) -> None:
    call = client.Track(tracking_service_pb2.TrackRequest(tracking_token=token))
    try:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            first = True
            async for message in call:
                if first:
                    counts["snapshots"] += 1
                    first = False
                if message.WhichOneof("update") == "position":
                    latencies.append(
                        time.time() - message.position.position_at.ToNanoseconds() / 1e9
                    )
    except TimeoutError:
        counts["held"] += 1
    finally:
        call.cancel()


def customers_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Track streams of one process (``job``: addresses, tokens, seconds, ramp_s)."""
    raise_fd_limit()
    return asyncio.run(_customers(job))


async def _customers(job: dict[str, Any]) -> dict[str, Any]:
    addresses: Sequence[str] = job["addresses"]
    channels = [
        aio.insecure_channel(addresses[i % len(addresses)])
        for i in range(CHANNELS_PER_WORKER * len(addresses))
    ]
    stubs = [tracking_service_pb2_grpc.TrackingServiceStub(c) for c in channels]
    counts = {"snapshots": 0, "held": 0}
    latencies: list[float] = []
    ramp = float(job.get("ramp_s", 0.0))
    deadline = time.monotonic() + ramp + job["seconds"]
    tokens: Sequence[str] = job["tokens"]
    tasks = []
    for i, token in enumerate(tokens):
        if ramp and i % 200 == 0:
            await asyncio.sleep(ramp * 200 / max(1, len(tokens)))
        tasks.append(
            asyncio.create_task(
                _customer(stubs[i % len(stubs)], token, deadline, counts, latencies)
            )
        )
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for channel in channels:
        await channel.close(None)
    return {
        **counts,
        "positions": len(latencies),
        "latencies": latencies,
        "errors": len(errors),
        "first_error": repr(errors[0])[:300] if errors else None,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
