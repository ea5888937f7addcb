"""Durable enqueueing of driver events with exactly-once sequence numbers.

Each event is appended by one Lua script that, atomically, compares its seq with the driver's
last accepted seq, appends it to its stream (the driver's ping shard for locations,
``DRIVER_EVENTS`` for the rest) and records the new last seq. A duplicate (seq at or below the
last accepted one) is not appended. Because the last seq lives in Redis next to the stream, a
gateway restart or a reconnect to another gateway process continues where the last ack left.

Group commit: events from all streams of the process are queued and sent together, one
pipeline (one round trip) per batch, so the Redis round trips per second stay bounded and
the process keeps a handful of connections whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import route_pb2
from prometheus_client import Counter, Histogram

from core import route_plans, topics
from core.bus import Bus
from core.redis_scripts import Script, execute
from core.settings import Settings
from core.workers import cancel

log = logging.getLogger(__name__)

# KEYS[1] last-seq key, KEYS[2] stream; ARGV[1] seq, ARGV[2] maxlen, ARGV[3..] field, value...
_APPEND = Script("""
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then return {0, last} end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], ARGV[1])
return {1, seq}
""")

ENQUEUED = Counter("lastmile_gateway_events_enqueued_total", "Driver events enqueued.", ["kind"])
DUPLICATES = Counter("lastmile_gateway_duplicates_total", "Events dropped as already accepted.")
ROUND_SIZE = Histogram(
    "lastmile_gateway_enqueue_round_events",
    "Events sent to Redis per round trip (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)


def _kind(stream: str) -> str:
    """The ``kind`` label of a stream: every ping shard as one (``lastmile:pings``), other
    streams by name (``lastmile:driver-events``)."""
    pings = topics.ping_stream(0).rsplit(":", 1)[0]
    return pings if stream.startswith(pings + ":") else stream


def last_seq_key(driver_id: str) -> str:
    """Redis key holding the driver's highest durably accepted seq."""
    return f"lastmile:gateway:seq:{driver_id}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one event: appended, or a duplicate of an accepted one."""

    appended: bool
    last_seq: int
    #: Only for peeks: the stored tracking mode.
    mode: int | None = None
    #: Only for peeks: the driver's current route version when it is not acknowledged.
    route: route_pb2.Route | None = None


@dataclass(slots=True)
class _Item:
    driver_id: str
    seq: int
    stream: str
    fields: list[Any]
    done: asyncio.Future[Outcome]


class Enqueuer:
    """Appends events for every stream of the process; see the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self._bus = bus
        self._settings = settings
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Load the script and start the sender."""
        await _APPEND.load(self._bus.redis)
        self._task = asyncio.create_task(self._run(), name="gateway-enqueuer")

    async def stop(self) -> None:
        """Stop the sender (streams are closed by then: nothing is waiting)."""
        await cancel(self._task)
        self._task = None

    @property
    def redis(self) -> Any:
        """The Redis client the events go to."""
        return self._bus.redis

    async def last_seq(self, driver_id: str) -> int:
        """The driver's last accepted seq (0 if none)."""
        value = await self._bus.redis.get(last_seq_key(driver_id))
        return int(value) if value is not None else 0

    async def append(
        self, driver_id: str, seq: int, stream: str, fields: dict[str, bytes | str | int]
    ) -> Outcome:
        """Append one event unless its seq was accepted already; returns once Redis has it."""
        flat: list[Any] = []
        for key, value in fields.items():
            flat += [key, value]
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(driver_id, seq, stream, flat, done))
        return await done

    async def peek(
        self, driver_id: str, mode_key: str
    ) -> tuple[int, int | None, route_pb2.Route | None]:
        """The driver's last accepted seq, stored tracking mode and unacknowledged route
        version (core.route_plans), batched like appends (thousands of apps reconnecting at
        once share round trips and connections)."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(driver_id, 0, "", [mode_key], done))
        outcome = await done
        return outcome.last_seq, outcome.mode, outcome.route

    async def _run(self) -> None:
        limit = self._settings.ingest_enqueue_batch
        while True:
            items = [await self._queue.get()]
            while len(items) < limit and not self._queue.empty():
                items.append(self._queue.get_nowait())
            await self._send(items)

    async def _send(self, items: list[_Item]) -> None:
        ROUND_SIZE.observe(len(items))
        maxlen = self._settings.ingest_stream_maxlen
        try:
            pipe = self._bus.redis.pipeline(transaction=False)
            for item in items:
                if not item.stream:  # a peek: last seq, tracking mode, route version
                    pipe.get(last_seq_key(item.driver_id))
                    pipe.get(item.fields[0])
                    pipe.hmget(route_plans.plan_key(item.driver_id), route_plans.WELCOME_FIELDS)
                    continue
                _APPEND.queue(
                    pipe,
                    [last_seq_key(item.driver_id), item.stream],
                    [item.seq, maxlen, *item.fields],
                )
            replies = await execute(pipe, self._bus.redis, raise_on_error=False)
        except Exception as exc:
            log.warning("enqueue round failed", extra={"events": len(items), "error": str(exc)})
            for item in items:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        answers = iter(replies)
        for item in items:
            reply = next(answers)
            if not item.stream:
                mode, plan = next(answers), next(answers)
                if not item.done.done():
                    item.done.set_result(
                        Outcome(
                            False,
                            int(reply or 0),
                            None if mode is None else int(mode),
                            route_plans.route_if_unacked(plan),
                        )
                    )
                continue
            if item.done.done():  # the stream went away meanwhile
                continue
            if isinstance(reply, Exception):
                item.done.set_exception(reply)
                continue
            appended, last = bool(int(reply[0])), int(reply[1])
            if appended:
                ENQUEUED.labels(_kind(item.stream)).inc()
            else:
                DUPLICATES.inc()
            item.done.set_result(Outcome(appended, last))
