"""The clients of the fault tests, behaving as real apps do through the Envoy edge: drivers on
the simulator's ``DriverLink`` (reconnect with backoff, resend what is not acked) streaming GPS
batches, customers holding ``Track`` streams that reconnect on error, and unary calls retried
with exponential backoff and jitter on UNAVAILABLE. Each keeps a ledger of what the platform
confirmed, for the accounting after the fault."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import betterproto
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from lastmile_client.lastmile.common.v1 import GpsFix, OrderStatus
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.driver.v1 import LocationBatch, StopEvent, TrackingMode
from lastmile_client.lastmile.tracking.v1 import TrackRequest
from simulator.connection import Connection
from simulator.driver_link import DriverLink, default_config
from simulator.metrics import Recorder

from core.geo import LatLng

#: Statuses a call is retried on: the platform says "try again", or the call timed out.
RETRYABLE = frozenset({Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED})
#: Transport failures (connection refused or reset while a process restarts).
TRANSPORT_ERRORS = (StreamTerminatedError, ConnectionError, OSError, TimeoutError)
CALL_TIMEOUT_S = 5.0
RETRY_WITHIN_S = 120.0
FIXES_PER_BATCH = 2
#: How often a driver app uploads a batch (its upload interval, not a wait of the test).
UPLOAD_EVERY_S = 0.3
FINAL = frozenset({OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.CANCELLED})
#: Track messages that only a live stream (one the platform feeds) receives.
LIVE = frozenset({"position", "eta", "status"})


class Backoff:
    """Exponential backoff with full jitter: a random delay up to base * 2^attempt, capped,
    so that clients cut off together do not come back together."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 2.0) -> None:
        self._base, self._cap = base_s, cap_s
        self._attempt = 0

    async def pause(self) -> None:
        """Wait before the next attempt."""
        delay = random.uniform(0.0, min(self._cap, self._base * 2**self._attempt))
        self._attempt += 1
        await asyncio.sleep(delay)

    def reset(self) -> None:
        """The last attempt worked."""
        self._attempt = 0


async def retrying[T](what: str, call: Callable[[], Awaitable[T]], retries: Counter[str]) -> T:
    """``call()`` until it succeeds; retried on :data:`RETRYABLE` statuses and transport
    errors (counted in ``retries``), any other error is raised."""
    backoff = Backoff()
    deadline = time.monotonic() + RETRY_WITHIN_S
    while True:
        try:
            return await call()
        except GRPCError as exc:
            if exc.status not in RETRYABLE or time.monotonic() > deadline:
                raise AssertionError(f"{what}: {exc.status.name} {exc.message}") from exc
        except TRANSPORT_ERRORS:
            if time.monotonic() > deadline:
                raise
        retries[what] += 1
        await backoff.pause()


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stamp(micros: int) -> dt.datetime:
    """Epoch microseconds as a datetime, exactly (no float on the way)."""
    return EPOCH + dt.timedelta(microseconds=micros)


def micros(at: dt.datetime) -> int:
    """A datetime as epoch microseconds, exactly."""
    return (at - EPOCH) // dt.timedelta(microseconds=1)


class FleetDriver:
    """One driver app: a ``DriverLink`` plus the ledger of every event it sent and every
    sequence number the platform confirmed (an Ack, or a Welcome's ``last_acked_seq``)."""

    def __init__(self, connection: Connection, driver_id: str, path: list[LatLng]) -> None:
        self.driver_id = driver_id
        self.recorder = Recorder()
        self.link = DriverLink(
            connection.gateway(driver_id),
            f"fault-{driver_id}",
            self.recorder,
            self._on_command,
            default_config(TrackingMode.ACTIVE, 1.0, UPLOAD_EVERY_S),
        )
        self._path = path
        self._step = 0
        self._last_us = 0
        #: seq -> capture times (epoch microseconds) of the fixes of that batch.
        self.batches: dict[int, list[int]] = {}
        self.sent: set[int] = set()
        #: seq -> when (monotonic) the platform confirmed it.
        self.confirmed: dict[int, float] = {}

    @property
    def reconnects(self) -> int:
        """Streams that ended in an error and were opened again."""
        return self.recorder.counts["reconnects"]

    @property
    def route(self) -> list[LatLng]:
        """The points the driver goes round."""
        return self._path

    @property
    def position(self) -> LatLng:
        """Where the driver is now."""
        return self._path[self._step % len(self._path)]

    async def _on_command(self, kind: str, value: Any) -> None:
        if kind == "ack":
            self._confirm([value.seq])
        elif kind == "welcome":
            self._confirm([s for s in self.sent if s <= value.last_acked_seq])

    def _confirm(self, seqs: list[int]) -> None:
        now = time.monotonic()
        for seq in seqs:
            self.confirmed.setdefault(seq, now)

    def batches_confirmed_since(self, since: float) -> int:
        """Location batches the platform confirmed after ``since`` (monotonic)."""
        return sum(1 for seq, at in self.confirmed.items() if at > since and seq in self.batches)

    def send_batch(self) -> int:
        """One LocationBatch of the next positions along the path; returns its seq."""
        fixes, times = [], []
        now_us = int(time.time() * 1e6)
        for _ in range(FIXES_PER_BATCH):
            # Strictly increasing capture times: (driver, time) identifies a stored fix.
            self._last_us = max(self._last_us + 1000, now_us - 200_000)
            self._step += 1
            where = self.position
            times.append(self._last_us)
            fixes.append(
                GpsFix(
                    captured_at=stamp(self._last_us),
                    position=LatLngMessage(lat=where.lat, lng=where.lng),
                    accuracy_m=5.0,
                    speed_mps=8.0,
                    heading_deg=90.0,
                )
            )
        seq = self.link.send(locations=LocationBatch(fixes=fixes))
        self.sent.add(seq)
        self.batches[seq] = times
        return seq

    def report_stop(self, order_id: str, stop_id: str, kind: Any) -> int:
        """A StopEvent on the stream (arrived, picked up); returns its seq."""
        where = self.position
        seq = self.link.send(
            stop=StopEvent(
                order_id=order_id,
                stop_id=stop_id,
                kind=kind,
                at=dt.datetime.now(dt.UTC),
                position=LatLngMessage(lat=where.lat, lng=where.lng),
            )
        )
        self.sent.add(seq)
        return seq

    async def drive(self, stop: asyncio.Event) -> None:
        """Upload a batch every :data:`UPLOAD_EVERY_S` until ``stop`` is set."""
        while not stop.is_set():
            self.send_batch()
            await asyncio.sleep(UPLOAD_EVERY_S)

    def acked_fixes(self) -> set[tuple[str, int]]:
        """(driver, capture time) of every fix in a confirmed batch."""
        return {(self.driver_id, at) for seq in self.confirmed for at in self.batches.get(seq, [])}

    def unconfirmed(self) -> set[int]:
        """Sent and not (yet) confirmed."""
        return self.sent - set(self.confirmed)


class CustomerWatch:
    """A customer's Track stream, opened again with backoff whenever it breaks, until the
    order is final. Records when each message arrived."""

    def __init__(self, connection: Connection, order_id: str, tracking_token: str) -> None:
        self.order_id = order_id
        self._connection = connection
        self._token = tracking_token
        self.status = OrderStatus.UNSPECIFIED
        #: (monotonic arrival time, kind, order status after it) of every message.
        self.messages: list[tuple[float, str, Any]] = []
        self.reconnects = 0

    def updates_since(self, since: float, kinds: frozenset[str]) -> int:
        """Messages of ``kinds`` received after ``since`` (monotonic)."""
        return sum(1 for at, kind, _ in self.messages if at > since and kind in kinds)

    def live_since(self, since: float) -> bool:
        """Whether the stream was live after ``since``: a position, ETA or status update
        came, or a snapshot showed the order final (nothing moves any more)."""
        return any(
            at > since and (kind in LIVE or (kind == "snapshot" and status in FINAL))
            for at, kind, status in self.messages
        )

    def describe(self) -> str:
        """For failure messages."""
        received = [f"{kind}:{status.name}" for _, kind, status in self.messages]
        return (
            f"Track {self.order_id}: status {self.status.name}, reconnects {self.reconnects},"
            f" received {received}"
        )

    async def follow(self) -> None:
        """Read (and reopen) the stream until it ends with the order final."""
        backoff = Backoff()
        while True:
            try:
                stream = self._connection.tracking().track(TrackRequest(tracking_token=self._token))
                async for update in stream:
                    backoff.reset()
                    self._take(update)
                if self.status in FINAL:
                    return
            except GRPCError as exc:
                if exc.status not in RETRYABLE:
                    raise AssertionError(f"Track {self.order_id}: {exc.status.name}") from exc
            except TRANSPORT_ERRORS:
                pass
            self.reconnects += 1
            await backoff.pause()

    def _take(self, update: Any) -> None:
        kind, value = betterproto.which_one_of(update, "update")
        if kind in ("snapshot", "status") and value is not None:
            self.status = value.status
        self.messages.append((time.monotonic(), kind, self.status))
