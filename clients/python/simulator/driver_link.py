"""A driver app's single ``Connect`` stream: Hello and Welcome, numbered events kept until
acked and resent after a reconnect, commands handed to the driver, and the GPS recorder that
captures at one rate and uploads batches at another as the pushed TrackingConfig says."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import betterproto
from grpclib.exceptions import GRPCError, StreamTerminatedError
from lastmile_client.lastmile.common.v1 import GpsFix
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.driver.v1 import (
    ConnectRequest,
    ConnectResponse,
    DriverGatewayServiceStub,
    Hello,
    LocationBatch,
    TrackingConfig,
    TrackingMode,
)

from simulator.gps import Fix
from simulator.metrics import Recorder

Command = Callable[[str, Any], Awaitable[None]]
#: Reconnect delays grow exponentially from the base to the cap; each is drawn between half
#: and all of that (jitter), so that apps cut off together (a gateway restart) do not all come
#: back in the same instant. A session that got as far as Welcome starts over from the base.
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0


def reconnect_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect number ``attempt`` (0 = the first) of a broken link."""
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * (1 << min(attempt, 16)))
    share = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return ceiling * share


def default_config(mode: TrackingMode, capture_s: float, upload_s: float) -> TrackingConfig:
    """A tracking config for use until the platform pushes one."""
    return TrackingConfig(
        mode=mode,
        capture_interval=dt.timedelta(seconds=capture_s),
        upload_interval=dt.timedelta(seconds=upload_s),
        max_batch_size=100,
    )


class DriverLink:
    """The stream of one driver; reconnects with backoff until :meth:`close`."""

    def __init__(
        self,
        client: DriverGatewayServiceStub,
        device_id: str,
        recorder: Recorder,
        on_command: Command,
        config: TrackingConfig,
    ) -> None:
        self._stub = client
        self._device_id = device_id
        self._recorder = recorder
        self._on_command = on_command
        self.config = config
        self._next_seq = 0
        self._unacked: dict[int, ConnectRequest] = {}
        self._outbox: asyncio.Queue[ConnectRequest | None] = asyncio.Queue()
        self._fix_counts: dict[int, int] = {}
        self.connected = asyncio.Event()
        # Whether the current session reached Welcome (then the backoff starts over).
        self._established = False
        # Set whenever nothing is waiting for an ack.
        self._drained = asyncio.Event()
        self._closing = False

    def send(self, **event: Any) -> int:
        """Queue one event (``stop=StopEvent(...)``, ...); returns its sequence number."""
        self._next_seq += 1
        request = ConnectRequest(seq=self._next_seq, **event)
        self._unacked[request.seq] = request
        # Before Welcome the event waits: Welcome (re)sends everything not yet acked.
        if self.connected.is_set():
            self._outbox.put_nowait(request)
        return self._next_seq

    def send_fixes(self, fixes: list[GpsFix]) -> None:
        """One LocationBatch per ``max_batch_size`` fixes."""
        size = max(1, self.config.max_batch_size or 100)
        for start in range(0, len(fixes), size):
            chunk = fixes[start : start + size]
            seq = self.send(locations=LocationBatch(fixes=chunk))
            self._fix_counts[seq] = len(chunk)
            self._recorder.counts["fixes_sent"] += len(chunk)

    async def _requests(self, queue: asyncio.Queue[ConnectRequest | None]) -> AsyncIterator[Any]:
        yield ConnectRequest(seq=0, hello=Hello(device_id=self._device_id, app_version="sim"))
        while (request := await queue.get()) is not None:
            yield request

    async def run(self) -> None:
        """Hold the stream open, reconnecting after errors, until closed."""
        attempt = 0
        while not self._closing:
            try:
                await self._session()
            except (GRPCError, StreamTerminatedError, OSError, ConnectionError) as exc:
                self._recorder.counts["reconnects"] += 1
                self._recorder.note(f"driver stream error (reconnected): {exc}")
            self.connected.clear()
            if self._closing:
                return
            if self._established:
                attempt, self._established = 0, False
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1

    async def _session(self) -> None:
        queue: asyncio.Queue[ConnectRequest | None] = asyncio.Queue()
        self._outbox = queue
        async for response in self._stub.connect(self._requests(queue)):
            await self._receive(response, queue)
            if self._closing:
                queue.put_nowait(None)

    async def _receive(
        self, response: ConnectResponse, queue: asyncio.Queue[ConnectRequest | None]
    ) -> None:
        kind, found = betterproto.which_one_of(response, "command")
        value: Any = found
        if kind == "welcome":
            self._welcome(value, queue)
        elif kind == "ack":
            self._acked(value.seq)
        elif kind == "reject":
            self._unacked.pop(value.seq, None)
            self._fix_counts.pop(value.seq, None)
            if not self._unacked:
                self._drained.set()
            self._recorder.counts["events_rejected"] += 1
            self._recorder.note(f"gateway refused an event: {value.message}")
        elif kind == "tracking_config":
            self.config = value
            self._recorder.counts["tracking_configs"] += 1
        await self._on_command(kind, value)

    def _welcome(self, welcome: Any, queue: asyncio.Queue[ConnectRequest | None]) -> None:
        """Drop what the platform already holds, renumber nothing, resend the rest."""
        last = int(welcome.last_acked_seq)
        for seq in [s for s in self._unacked if s <= last]:
            self._acked(seq)
        if self._next_seq < last:
            # A fresh app for a driver the platform knows: continue above its numbers.
            pending = sorted(self._unacked.values(), key=lambda r: r.seq)
            self._unacked.clear()
            self._next_seq = last
            for request in pending:
                count = self._fix_counts.pop(request.seq, 0)
                request.seq = self._next_seq = self._next_seq + 1
                self._unacked[request.seq] = request
                if count:
                    self._fix_counts[request.seq] = count
        for request in sorted(self._unacked.values(), key=lambda r: r.seq):
            queue.put_nowait(request)
        if welcome.tracking_config.capture_interval:
            self.config = welcome.tracking_config
        self._established = True
        self.connected.set()

    def _acked(self, seq: int) -> None:
        if self._unacked.pop(seq, None) is not None:
            self._recorder.counts["events_acked"] += 1
            self._recorder.counts["fixes_acked"] += self._fix_counts.pop(seq, 0)
        if not self._unacked:
            self._drained.set()

    async def close(self) -> None:
        """Wait (briefly) for outstanding acks, then half-close the stream."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                if self._unacked and self.connected.is_set():
                    self._drained.clear()
                    await self._drained.wait()
        self._closing = True
        self._outbox.put_nowait(None)


def fix_message(fix: Fix, at: dt.datetime) -> GpsFix:
    """The GpsFix of a simulated reading captured at wall-clock ``at``."""
    return GpsFix(
        captured_at=at,
        position=LatLngMessage(lat=fix.position.lat, lng=fix.position.lng),
        accuracy_m=fix.accuracy_m,
        speed_mps=fix.speed_mps,
        heading_deg=fix.heading_deg,
    )


def interval_s(value: dt.timedelta | None, fallback: float) -> float:
    """Seconds of a pushed interval; the fallback when unset."""
    seconds = value.total_seconds() if value else 0.0
    return seconds if seconds > 0 else fallback
