"""Ping shard ownership on a real Redis: one owner per shard, shards move when tracking
processes join, leave or die, and two processors never read the same shard."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.bus import Bus, StreamEntry
from core.settings import Settings
from ops.servers import RedisServer
from tests.helpers import async_wait_until
from tests.integration.orders_support import own_redis_db
from tracking.processor import GROUP, Processor, shard_streams
from tracking.shard_leases import MEMBERS_KEY, ShardLeases, assigned, lease_key

pytestmark = pytest.mark.integration
STREAMS = [f"test:pings:{i}" for i in range(4)]
LEASE_S = 0.8


@pytest.fixture
def bus(private_bus: Bus) -> Bus:
    """The module's own emptied database (the session's tracking processes hold leases in
    database 0)."""
    return private_bus


def test_assignment_splits_shards_evenly_and_agrees_between_members() -> None:
    members = ["b-2", "a-1", "c-3"]
    split = {name: assigned(8, members, name) for name in members}
    assert split == {"a-1": [0, 3, 6], "b-2": [1, 4, 7], "c-3": [2, 5]}
    assert assigned(4, [], "solo") == [0, 1, 2, 3]
    assert assigned(2, ["a", "b", "c"], "c") == []  # more processors than shards


async def test_shards_move_when_processors_join_leave_or_die(bus: Bus) -> None:
    a = ShardLeases(bus, STREAMS, "proc-a", LEASE_S)
    b = ShardLeases(bus, STREAMS, "proc-b", LEASE_S)

    alone = await a.refresh()
    assert alone.held == tuple(STREAMS) and alone.taken == tuple(STREAMS)
    assert (await a.refresh()).taken == ()  # extended, not taken again

    # b joins: it wants shards 1 and 3, but a holds them until its next refresh.
    assert (await b.refresh()).held == ()
    assert (await a.refresh()).held == (STREAMS[0], STREAMS[2])
    joined = await b.refresh()
    assert joined.held == joined.taken == (STREAMS[1], STREAMS[3])
    assert await bus.redis.get(lease_key(STREAMS[1])) == b"proc-b"

    # a leaves cleanly: b takes everything at its next refresh.
    await a.leave()
    assert await bus.redis.zrange(MEMBERS_KEY, 0, -1) == [b"proc-b"]
    assert (await b.refresh()).held == tuple(STREAMS)

    # b dies (no leave): a newcomer gets nothing until b's heartbeat and leases run out.
    c = ShardLeases(bus, STREAMS, "proc-c", LEASE_S)
    assert (await c.refresh()).held == ()

    async def all_taken() -> bool:
        return (await c.refresh()).held == tuple(STREAMS)

    await async_wait_until(all_taken, 5 * LEASE_S, interval=0.1, what="the dead one's shards")


async def test_two_processors_never_read_the_same_shard(
    bus: Bus, redis_server: RedisServer, redis_db: int
) -> None:
    """Entries of every shard are delivered to exactly one consumer of the group, and a
    processor that stops hands its shards to the other one."""
    settings = Settings.from_env({}).replace(
        redis_url=own_redis_db(redis_server.url, redis_db),
        processor_lease_s=LEASE_S,
        processor_block_ms=100,
    )
    streams = shard_streams(settings)
    processors = [_Recorder(settings, bus, f"proc-{i}") for i in range(2)]
    for processor in processors:
        await processor.start()
    try:

        async def split() -> bool:
            held = [set(p.leases.held) for p in processors]
            return held[0].isdisjoint(held[1]) and held[0] | held[1] == set(streams)

        await async_wait_until(split, 10.0, interval=0.1, what="shards split between two")
        for round_ in range(5):
            await bus.append_many([(s, {"n": str(round_)}) for s in streams])

        async def all_read() -> bool:
            return sum(len(p.read) for p in processors) == 5 * len(streams)

        await async_wait_until(all_read, 10.0, what="every entry read")
        for stream in streams:
            readers = {p.name for p in processors if stream in p.streams_read}
            assert len(readers) == 1, f"{stream} was read by {readers}"

        await processors[0].stop()
        await bus.append_many([(s, {"n": "after"}) for s in streams])

        async def survivor_reads_all() -> bool:
            return {s for s, n in processors[1].read if n == b"after"} == set(streams)

        await async_wait_until(survivor_reads_all, 10.0, what="the survivor reading every shard")
    finally:
        for processor in processors:
            await processor.stop()


class _Recorder(Processor):
    """A processor that records what it was given instead of writing positions."""

    def __init__(self, settings: Settings, bus: Bus, name: str) -> None:
        super().__init__(settings, bus, database=None, roads=None)  # type: ignore[arg-type]
        self.name = name
        self.leases = ShardLeases(bus, shard_streams(settings), name, settings.processor_lease_s)
        self._leases = self.leases
        self._consumer = name
        self.read: list[tuple[str, bytes]] = []

    @property
    def streams_read(self) -> set[str]:
        return {stream for stream, _ in self.read}

    async def start(self) -> None:
        for stream in shard_streams(self._settings):
            await self._bus.ensure_group(stream, GROUP, "0")
        self._task = asyncio.create_task(self._run())

    async def process(self, entries: Sequence[StreamEntry]) -> None:
        self.read += [(e.stream, e.fields[b"n"]) for e in entries]
        for entry in entries:
            await self._bus.ack(entry.stream, GROUP, [entry.entry_id])
