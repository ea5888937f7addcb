"""Durable enqueueing of driver events with exactly-once sequence numbers.

Each event is appended by a Lua script that, atomically, compares its seq with the driver's
last accepted seq, appends it to its stream (the driver's ping shard for locations,
``DRIVER_EVENTS`` for the rest) and records the new last seq; one script call takes up to
``EVENTS_PER_CALL`` events, in order. A duplicate (seq at or below the last accepted one) is
not appended. Because the last seq lives in Redis next to the stream, a gateway restart or a
reconnect to another gateway process continues where the last ack left.

Group commit: events from all streams of the process are queued and sent together, one
pipeline (one round trip) per batch, so the Redis round trips per second stay bounded and
the process keeps a handful of connections whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import route_pb2
from prometheus_client import Counter, Histogram

from core import route_plans, topics
from core.bus import Bus
from core.redis_scripts import Script, execute, per_call
from core.settings import Settings
from core.workers import cancel

log = logging.getLogger(__name__)

# KEYS: per event its last-seq key and its stream; ARGV[1] maxlen, then per event: seq, n, and
# n values (field, value, ...). Returns per event {1, seq} when appended, else {0, last seq}.
_APPEND = Script("""
local out, a = {}, 2
for i = 1, #KEYS, 2 do
  local seq, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local last = tonumber(redis.call('GET', KEYS[i]) or '0')
  if seq <= last then
    out[#out + 1] = {0, last}
  else
    redis.call('XADD', KEYS[i + 1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, a + 2, a + 1 + n))
    redis.call('SET', KEYS[i], ARGV[a])
    out[#out + 1] = {1, seq}
  end
  a = a + 2 + n
end
return out
""")
# Events per script call (core.redis_scripts.per_call): redis-py spent 32-34 us of CPU an
# event with a call each, 19-21 us in calls of 100.
EVENTS_PER_CALL = 100

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
        appends = [item for item in items if item.stream]
        peeks = [item for item in items if not item.stream]
        calls = per_call(appends, EVENTS_PER_CALL)
        try:
            pipe = self._bus.redis.pipeline(transaction=False)
            for call in calls:
                _queue_appends(pipe, call, self._settings.ingest_stream_maxlen)
            for item in peeks:  # last seq, tracking mode, route version
                pipe.get(last_seq_key(item.driver_id))
                pipe.get(item.fields[0])
                pipe.hmget(route_plans.plan_key(item.driver_id), route_plans.WELCOME_FIELDS)
            replies = await execute(pipe, self._bus.redis, raise_on_error=False)
        except Exception as exc:
            log.warning("enqueue round failed", extra={"events": len(items), "error": str(exc)})
            for item in items:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        answers = iter(replies)
        for call in calls:
            _settle_appends(call, next(answers))
        for item in peeks:
            last, mode, plan = next(answers), next(answers), next(answers)
            if not item.done.done():
                item.done.set_result(
                    Outcome(
                        False,
                        int(last or 0),
                        None if mode is None else int(mode),
                        route_plans.route_if_unacked(plan),
                    )
                )


def _queue_appends(pipe: Any, items: Sequence[_Item], maxlen: int) -> None:
    """One script call appending ``items`` in order."""
    keys: list[str] = []
    arguments: list[Any] = [maxlen]
    for item in items:
        keys += [last_seq_key(item.driver_id), item.stream]
        arguments += [item.seq, len(item.fields), *item.fields]
    _APPEND.queue(pipe, keys, arguments)


def _settle_appends(items: Sequence[_Item], reply: Any) -> None:
    """Resolve each item of a script call from its reply (an error fails them all)."""
    for index, item in enumerate(items):
        if item.done.done():  # the stream went away meanwhile
            continue
        if isinstance(reply, Exception):
            item.done.set_exception(reply)
            continue
        appended, last = bool(int(reply[index][0])), int(reply[index][1])
        if appended:
            ENQUEUED.labels(_kind(item.stream)).inc()
        else:
            DUPLICATES.inc()
        item.done.set_result(Outcome(appended, last))
