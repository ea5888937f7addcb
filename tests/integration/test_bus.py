"""The event bus on a real Redis: durable streams with consumer groups, live pub/sub, and Lua
scripts run by SHA in pipelines."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from redis.exceptions import ResponseError

from core.bus import Bus
from core.redis_scripts import Script, execute
from core.settings import Settings
from ops.servers import RedisServer
from tests.helpers import wait_for_subscriber

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    """A started bus on the session's Redis."""
    events = Bus(Settings.from_env({}).replace(redis_url=redis_server.url))
    await events.start()
    try:
        yield events
    finally:
        await events.stop()


def _name(kind: str) -> str:
    return f"test:{kind}:{uuid.uuid4().hex[:8]}"


async def test_stream_round_trip_with_a_consumer_group(bus: Bus) -> None:
    stream, group = _name("pings"), "processors"
    await bus.ensure_group(stream, group)
    await bus.ensure_group(stream, group)  # already there: no error

    first = await bus.append(stream, {"driver": "d-1", "seq": "1"})
    rest = await bus.append_many([(stream, {"driver": "d-1", "seq": str(n)}) for n in (2, 3)])

    entries = await bus.read_group([stream], group, "c-1", block_ms=100)
    assert [e.entry_id for e in entries] == [first, *rest]
    assert {e.stream for e in entries} == {stream}
    assert [e.fields[b"seq"] for e in entries] == [b"1", b"2", b"3"]
    assert entries[0].fields == {b"driver": b"d-1", b"seq": b"1"}

    # Delivered but not acked: pending for c-1; another consumer gets nothing new.
    assert (await bus.redis.xpending(stream, group))["pending"] == 3
    assert await bus.read_group([stream], group, "c-2", block_ms=50) == []

    await bus.ack(stream, group, [e.entry_id for e in entries])
    assert (await bus.redis.xpending(stream, group))["pending"] == 0
    assert await bus.read_group([stream], group, "c-1", block_ms=50) == []


async def test_entries_left_pending_by_a_dead_consumer_are_claimed_once_idle(bus: Bus) -> None:
    stream, group = _name("events"), "dispatch"
    await bus.ensure_group(stream, group)
    ids = await bus.append_many([(stream, {"n": str(n)}) for n in range(3)])
    await bus.read_group([stream], group, "dead-replica", block_ms=100)  # never acked

    # Not idle long enough: nothing moves.
    assert await bus.claim_idle([stream], group, "survivor", 60_000) == []

    claimed = await bus.claim_idle([stream], group, "survivor", 0)
    assert [e.entry_id for e in claimed] == ids
    assert [e.fields[b"n"] for e in claimed] == [b"0", b"1", b"2"]
    pending = await bus.redis.xpending_range(stream, group, "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"survivor"}


async def test_group_created_at_the_end_skips_older_entries(bus: Bus) -> None:
    stream = _name("orders")
    await bus.append(stream, {"n": "old"})
    await bus.ensure_group(stream, "late", start_id="$")
    new = await bus.append(stream, {"n": "new"})
    entries = await bus.read_group([stream], "late", "c-1", block_ms=100)
    assert [(e.entry_id, e.fields) for e in entries] == [(new, {b"n": b"new"})]


async def test_read_group_blocks_until_an_entry_arrives(bus: Bus) -> None:
    stream, group = _name("wake"), "g"
    await bus.ensure_group(stream, group)
    reader = asyncio.create_task(bus.read_group([stream], group, "c-1", block_ms=5000))
    entry_id = await bus.append(stream, {"k": "v"})
    entries = await asyncio.wait_for(reader, timeout=5)
    assert [e.entry_id for e in entries] == [entry_id]


async def test_publish_reaches_a_subscriber(bus: Bus) -> None:
    channel, other = _name("order"), _name("order")
    messages = bus.subscribe(channel)
    assert isinstance(messages, AsyncGenerator)  # so it can be closed
    first = asyncio.ensure_future(anext(messages))
    try:
        await wait_for_subscriber(bus.redis, channel, before=0)
        await bus.publish(other, b"not for us")
        await bus.publish(channel, b"\x00binary\xff")
        await bus.publish(channel, b"second")
        assert await asyncio.wait_for(first, timeout=5) == (channel, b"\x00binary\xff")
        assert await asyncio.wait_for(anext(messages), timeout=5) == (channel, b"second")
    finally:
        if not first.done():
            first.cancel()
        await messages.aclose()
    # Closing the iterator unsubscribes.
    assert await bus.redis.pubsub_numsub(channel) == [(channel.encode(), 0)]


# A counter that only moves up: returns the new value, or 0 when the argument is not higher.
_RAISE = Script(
    """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
"""
)


async def test_pipelined_scripts_survive_an_emptied_script_cache(bus: Bus) -> None:
    key = _name("counter")
    await _RAISE.load(bus.redis)
    pipe = bus.redis.pipeline(transaction=False)
    _RAISE.queue(pipe, [key], [5])
    pipe.get(key)
    _RAISE.queue(pipe, [key], [3])
    assert await execute(pipe, bus.redis) == [5, b"5", 0]

    # What a restarted Redis looks like to its clients: no script is known any more. The calls
    # answered NOSCRIPT ran nowhere; they run again after the pipeline, in their order, and
    # nothing runs twice (the INCR ran once, in its place: 5 -> 6).
    await bus.redis.script_flush()
    pipe = bus.redis.pipeline(transaction=False)
    _RAISE.queue(pipe, [key], [7])
    pipe.incr(key)
    _RAISE.queue(pipe, [key], [9])
    assert await execute(pipe, bus.redis) == [7, 6, 9]
    assert await bus.redis.get(key) == b"9"
    assert await bus.redis.script_exists(_RAISE.sha) == [True]

    await bus.redis.script_flush()
    assert await _RAISE(bus.redis, [key], [10]) == 10


async def test_script_errors_are_raised_or_returned_in_place(bus: Bus) -> None:
    key = _name("counter")
    pipe = bus.redis.pipeline(transaction=False)
    _RAISE.queue(pipe, [key], ["not a number"])
    pipe.set(key, "1")
    with pytest.raises(ResponseError):
        await execute(pipe, bus.redis)
    assert await bus.redis.get(key) == b"1"  # the rest of the pipeline ran

    pipe = bus.redis.pipeline(transaction=False)
    _RAISE.queue(pipe, [key], ["not a number"])
    _RAISE.queue(pipe, [key], [2])
    error, raised = await execute(pipe, bus.redis, raise_on_error=False)
    assert isinstance(error, ResponseError) and raised == 2
