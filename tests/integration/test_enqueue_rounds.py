"""The gateway's group commit on a real Redis: a round of more events than one script call
takes is appended call by call, in order, each event answered for itself; a seq at or below
the last accepted one (also within the same round) is a duplicate and is not appended again;
peeks in the same round see what the round appended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.bus import Bus
from core.settings import Settings
from gateway.ingest import EVENTS_PER_CALL, Enqueuer
from ops.servers import RedisServer
from tests.integration.orders_support import own_redis_db

pytestmark = pytest.mark.integration
STREAM = "test:enqueue:pings"


@pytest.fixture
async def enqueuer(redis_server: RedisServer, redis_db: int) -> AsyncIterator[Enqueuer]:
    """A started enqueuer on an emptied private database."""
    settings = Settings.from_env({}).replace(redis_url=own_redis_db(redis_server.url, redis_db))
    bus = Bus(settings)
    await bus.start()
    await bus.redis.flushdb()
    enqueuer = Enqueuer(bus, settings)
    await enqueuer.start()
    try:
        yield enqueuer
    finally:
        await enqueuer.stop()
        await bus.stop()


def _fields(driver: str, seq: int) -> dict[str, bytes | str | int]:
    return {"driver": driver, "seq": seq, "data": f"{driver}/{seq}".encode()}


async def test_a_large_round_appends_every_event_once_in_order(enqueuer: Enqueuer) -> None:
    drivers = [f"drv-enq-{k}" for k in range(2 * EVENTS_PER_CALL + 30)]
    # Queued in one go: the sender takes them as one round (up to ingest_enqueue_batch).
    first = [enqueuer.append(d, 1, STREAM, _fields(d, 1)) for d in drivers]
    # Driver 0's seq 1 again and its seq 2, in the same round as its first seq 1.
    extra = [
        enqueuer.append(drivers[0], 1, STREAM, _fields(drivers[0], 1)),
        enqueuer.append(drivers[0], 2, STREAM, _fields(drivers[0], 2)),
    ]
    peek = asyncio.ensure_future(enqueuer.peek(drivers[-1], "lastmile:test:no-mode"))

    outcomes = await asyncio.gather(*first, *extra)
    last, mode, route = await peek

    assert all(o.appended and o.last_seq == 1 for o in outcomes[: len(drivers)])
    assert [(o.appended, o.last_seq) for o in outcomes[len(drivers) :]] == [(False, 1), (True, 2)]
    assert (last, mode, route) == (1, None, None)
    entries = await enqueuer.redis.xrange(STREAM)
    assert [e[1][b"data"] for e in entries] == [f"{d}/1".encode() for d in drivers] + [
        f"{drivers[0]}/2".encode()
    ]
    assert await enqueuer.last_seq(drivers[0]) == 2
    assert await enqueuer.last_seq(drivers[-1]) == 1


async def test_a_resent_event_is_acked_as_a_duplicate_and_not_appended(enqueuer: Enqueuer) -> None:
    await enqueuer.append("drv-enq-r", 5, STREAM, _fields("drv-enq-r", 5))

    again = await enqueuer.append("drv-enq-r", 4, STREAM, _fields("drv-enq-r", 4))

    assert (again.appended, again.last_seq) == (False, 5)
    assert await enqueuer.redis.xlen(STREAM) == 1
