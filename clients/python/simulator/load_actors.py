"""The actors of load mode, each bounded by its run's deadline: a driver app on its ``Connect``
stream sending GPS along a real road (at a steady rate, back to back, or holding the stream
idle) and a customer holding a ``Track`` stream, measuring how old each position is when it
arrives.

They speak the same public contracts as the rest of the simulator but through grpcio's asyncio
channels and the protobuf runtime's messages (``gen/python``) instead of grpclib and
betterproto: betterproto spends about a millisecond of Python per location batch, and grpclib
makes one system call per message where grpcio's core writes the messages of many streams of a
connection together. Either would cap a load process far below what the platform takes and
make the tracking benchmark measure its load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from grpc import aio
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc
from lastmile.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from core.geo import LatLng
from simulator.gps import GpsNoise, RoutePath
from simulator.metrics import Recorder

MODES = ("rate", "flood", "hold")
# Wall seconds a closing stream waits for the acks of what it sent, then for the server's end.
SETTLE_S = 5.0
Request = driver_service_pb2.ConnectRequest
Response = driver_service_pb2.ConnectResponse
Connect = aio.StreamStreamCall[Request, Response]
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Phase:
    """How the drivers of a load run behave, and for how long.

    ``rate``: each driver captures a fix a second and sends ``fixes_per_message`` of them every
    ``interval_s`` (the driver app's upload interval); ``flood``: each driver sends a batch of
    ``fixes_per_message`` as soon as the previous one is acked, all drivers starting together
    once the ramp is over; ``hold``: connected and idle. Streams open spread over ``ramp_s``;
    everything ends ``ramp_s + seconds`` after the start.
    """

    mode: str = "rate"
    fixes_per_message: int = 5
    interval_s: float = 5.0
    seconds: float = 60.0
    ramp_s: float = 0.0


@dataclass
class Tally:
    """What one load process saw: counters, notes (errors, once each) and latencies."""

    recorder: Recorder = field(default_factory=Recorder)
    # Seconds from a fix's capture to its position reaching a customer, and when (epoch s) each
    # reached it: a benchmark tells the warm-up from the steady state.
    latencies: list[float] = field(default_factory=list)
    latency_at: list[float] = field(default_factory=list)
    # Seconds from opening a Track stream to its snapshot: what a customer waits for the map.
    snapshot_waits: list[float] = field(default_factory=list)
    # How late this process's event loop woke a timer, and when (epoch s): a position received
    # while the loop was busy is stamped that much late (see :func:`probe_loop`).
    loop_lags: list[float] = field(default_factory=list)
    loop_lag_at: list[float] = field(default_factory=list)
    # Fixes acked, by the second (epoch) their batch was sent: the rate in steady state.
    acked_by_second: Counter[int] = field(default_factory=Counter)

    def count(self, name: str, by: int = 1) -> None:
        """Add to a counter."""
        self.recorder.counts[name] += by

    def error(self, counter: str, text: str) -> None:
        """Count an error and remember its text."""
        self.recorder.counts[counter] += 1
        self.recorder.note(text[:300])


@dataclass(frozen=True, slots=True)
class Second:
    """Where a driver is after each second of driving a road, and how it moves there."""

    where: LatLng
    heading_deg: float
    speed_mps: float


def road_seconds(path: RoutePath) -> list[Second]:
    """The road there and back, one entry per second at the road's speed (computed once per
    path and shared by its drivers: a fix then costs a lookup and the noise)."""
    length = max(1.0, path.length_m)
    seconds, along = [], 0.0
    while along < 2 * length:
        forward = along <= length
        distance = along if forward else 2 * length - along
        speed = path.speed_at(distance)
        where, heading = path.position_at(distance)
        seconds.append(Second(where, heading if forward else (heading + 180.0) % 360.0, speed))
        along += speed
    return seconds


class Walker:
    """A driver's motion for load: back and forth along a road at the road's speed, one fix per
    second of driving, seen through the GPS noise model."""

    def __init__(self, road: Sequence[Second], noise: GpsNoise, rng: random.Random) -> None:
        self._road = road
        self._noise = noise
        self._at = rng.randrange(len(road))  # drivers of one road start spread out
        self._last_at: float | None = None

    def fixes(self, count: int, newest_at: float) -> list[common_pb2.GpsFix]:
        """``count`` fixes, the newest captured at ``newest_at`` (epoch s), the others spread
        evenly since the previous batch's newest (a second apart for the first batch, and
        for a phone uploading ``count`` one-second fixes every ``count`` seconds). Capture
        times never repeat: history keeps one fix per driver and microsecond."""
        start = newest_at - count if self._last_at is None else self._last_at
        newest_at = max(newest_at, start + count * 1e-5)
        step = (newest_at - start) / count
        self._last_at = newest_at
        return [self._step(start + step * (i + 1)) for i in range(count)]

    def _step(self, at: float) -> common_pb2.GpsFix:
        second = self._road[self._at]
        self._at = (self._at + 1) % len(self._road)
        seen = self._noise.observe(second.where, second.speed_mps, second.heading_deg)
        fix = common_pb2.GpsFix(
            accuracy_m=seen.accuracy_m, speed_mps=seen.speed_mps, heading_deg=seen.heading_deg
        )
        fix.position.lat, fix.position.lng = seen.position.lat, seen.position.lng
        fix.captured_at.FromNanoseconds(int(at * 1e9))
        return fix


@dataclass
class LoadDriver:
    """One driver app of a load run."""

    driver_id: str
    channel: aio.Channel
    metadata: Metadata
    walker: Walker
    rng: random.Random
    # Reported once connected: the pickup of an order the run gave this driver.
    stops: Sequence[driver_pb2.StopEvent] = ()


class _Session:
    """The numbered events of one open stream and their acks."""

    def __init__(self, stream: Connect, last_acked: int, tally: Tally) -> None:
        self._stream = stream
        self._seq = last_acked  # a known driver continues above what the platform holds
        # seq -> (fixes, the second it was sent)
        self._fixes: dict[int, tuple[int, int]] = {}
        self._tally = tally
        self.settled = asyncio.Event()
        self.settled.set()
        self.broken = False
        self.ended = False

    async def send(self, request: Request, fixes: int = 0) -> None:
        """Number and send one event."""
        self._seq += 1
        request.seq = self._seq
        self._fixes[self._seq] = (fixes, int(time.time()))
        self.settled.clear()
        self._tally.count("fixes_sent", fixes)
        await self._stream.write(request)

    async def read(self, deadline: float) -> None:
        """Count acks and refusals (commands are ignored) until the server ends the stream."""
        try:
            # Anything but a response is the end of the stream (grpc.aio.EOF).
            while isinstance(response := await self._stream.read(), Response):
                kind = response.WhichOneof("command")
                if kind == "ack":
                    self._tally.count("events_acked")
                    fixes, sent = self._fixes.pop(response.ack.seq, (0, 0))
                    self._tally.count("fixes_acked", fixes)
                    if fixes:
                        self._tally.acked_by_second[sent] += fixes
                elif kind == "reject":
                    self._fixes.pop(response.reject.seq, None)
                    self._tally.error("events_rejected", f"refused: {response.reject.message}")
                if not self._fixes:
                    self.settled.set()
            self.ended = True
        except aio.AioRpcError as exc:
            self.broken = True
            if asyncio.get_running_loop().time() < deadline:
                self._tally.error("stream_errors", f"driver stream failed: {_status(exc)}")
        finally:
            self.settled.set()


def _status(exc: aio.AioRpcError) -> str:
    return f"{exc.code().name} {exc.details()}"


async def drive(driver: LoadDriver, phase: Phase, deadline: float, tally: Tally) -> None:
    """Connect, report the driver's stops, then send fixes as the phase says until
    ``deadline`` (loop time); half-close once the last batch is acked (briefly)."""
    loop = asyncio.get_running_loop()
    gateway = driver_service_pb2_grpc.DriverGatewayServiceStub(driver.channel)
    # No request iterator: the stream is written to (the generated types miss that form).
    stream: Connect = gateway.Connect(metadata=driver.metadata)  # type: ignore[call-arg]
    welcomed = False
    try:
        hello = driver_pb2.Hello(device_id=driver.driver_id, app_version="sim-load")
        await stream.write(Request(seq=0, hello=hello))
        async with asyncio.timeout(max(0.1, deadline - loop.time())):
            welcome = await stream.read()
        if not isinstance(welcome, Response) or welcome.WhichOneof("command") != "welcome":
            tally.error("never_connected", "a driver stream ended before its Welcome")
            return
        welcomed = True
        tally.count("connected")
        session = _Session(stream, welcome.welcome.last_acked_seq, tally)
        reader = asyncio.create_task(session.read(deadline))
        try:
            await _work(driver, session, phase, deadline, tally)
            await _close(stream, session, reader)
        finally:
            reader.cancel()
    except TimeoutError:
        tally.error("never_connected", "a driver stream got no Welcome before the deadline")
    except aio.AioRpcError as exc:
        if welcomed:
            tally.error("stream_errors", f"driver stream failed: {_status(exc)}")
        else:
            # Its handler never ran: gRPC core gives up on calls its server does not take in
            # time (a saturated gateway takes new calls slowly, see docs/deployment.md).
            tally.error("not_admitted", f"a driver stream ended before its Welcome: {_status(exc)}")
    finally:
        stream.cancel()  # nothing once the server has ended it


async def _close(stream: Connect, session: _Session, reader: asyncio.Task[None]) -> None:
    """Wait for the acks, half-close, and let the server end the stream (all bounded)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_S):
            await session.settled.wait()
            if not session.broken:
                await stream.done_writing()
                await reader


async def _work(
    driver: LoadDriver, session: _Session, phase: Phase, deadline: float, tally: Tally
) -> None:
    loop = asyncio.get_running_loop()
    for stop in driver.stops:
        await session.send(Request(stop=stop))
    if phase.mode == "hold":
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        if not session.broken:
            tally.count("held")
        return
    size = max(1, phase.fixes_per_message)
    if phase.mode == "rate":
        # Phones do not upload in step: spread the first upload over the interval.
        await asyncio.sleep(driver.rng.random() * phase.interval_s)
    elif phase.mode == "flood":
        # Every stream connects before any floods: a gRPC aio server takes new calls one per
        # turn of its event loop, so under a flood the last streams would wait for minutes.
        await asyncio.sleep(max(0.0, deadline - phase.seconds - loop.time()))
    while loop.time() < deadline and not session.broken:
        began = loop.time()
        batch = driver_pb2.LocationBatch(fixes=driver.walker.fixes(size, time.time()))
        await session.send(Request(locations=batch), size)
        if phase.mode == "flood":
            # The next batch goes once this one is acked: one message in flight per stream.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await session.settled.wait()
        else:
            await asyncio.sleep(max(0.0, phase.interval_s - (loop.time() - began)))


async def watch(channel: aio.Channel, token: str, deadline: float, tally: Tally) -> None:
    """A customer's ``Track`` stream until ``deadline`` (loop time): the snapshot, then every
    position with its age (receive time minus the fix's capture time, same clock)."""
    loop = asyncio.get_running_loop()
    tally.count("track_opens")
    tracking = tracking_service_pb2_grpc.TrackingServiceStub(channel)
    stream = tracking.Track(tracking_service_pb2.TrackRequest(tracking_token=token))
    try:
        async with asyncio.timeout(max(0.1, deadline - loop.time())):
            first = True
            opened = time.monotonic()
            async for update in stream:
                if first:
                    tally.count("snapshots")
                    tally.snapshot_waits.append(time.monotonic() - opened)
                    first = False
                if update.WhichOneof("update") == "position":
                    at = update.position.position_at.ToNanoseconds() / 1e9
                    now = time.time()
                    tally.latencies.append(now - at)
                    tally.latency_at.append(now)
    except TimeoutError:
        tally.count("track_held")
    except aio.AioRpcError as exc:
        tally.error("track_errors", f"Track stream failed: {_status(exc)}")
    finally:
        stream.cancel()


#: How often :func:`probe_loop` sets its timer.
PROBE_INTERVAL_S = 0.02


async def probe_loop(deadline: float, tally: Tally) -> None:
    """Until ``deadline`` (loop time), how late this process's loop wakes a short timer. The
    customers' receive times are stamped by the same loop: when it is busy (its own streams,
    or the CPU taken by the servers on this shared box), the stamp is late by about as much,
    and that wait would be counted as the platform's latency. A phone does not share it."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        due = loop.time() + PROBE_INTERVAL_S
        await asyncio.sleep(PROBE_INTERVAL_S)
        tally.loop_lags.append(max(0.0, loop.time() - due))
        tally.loop_lag_at.append(time.time())
