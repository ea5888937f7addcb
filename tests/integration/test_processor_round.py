"""The order of a processing round on a real Redis and PostgreSQL: positions are shown
(publishers) as soon as live state has them, before the history write; the observers that step
per-driver state run after the write, and not at all when it fails. An entry the round cannot
read is set aside in the dead-letter stream, listed and replayed by ``lastmile dead-letters``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2

from core.bus import Bus, StreamEntry
from core.db import Database
from core.settings import Settings
from ops import cli
from ops.servers import PostgresServer, RedisServer
from tests.integration.orders_support import own_redis_db
from tracking import dead_letters
from tracking.history import History
from tracking.live_state import LiveState
from tracking.positions import PositionUpdate
from tracking.processor import Processor

pytestmark = pytest.mark.integration
DRIVER = "drv-round"


@pytest.fixture
async def parts(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int
) -> AsyncIterator[tuple[Settings, Bus, Database]]:
    """Settings, a started bus (emptied private Redis database) and a migrated fresh database."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name} OWNER lastmile")
    settings = Settings.from_env({}).replace(
        database_url=postgres_server.dsn.rsplit("/", 1)[0] + f"/{name}",
        redis_url=own_redis_db(redis_server.url, redis_db),
        snap_mode="off",
    )
    bus, database = Bus(settings), Database(settings)
    await bus.start()
    await bus.redis.flushdb()
    await database.start()
    try:
        yield settings, bus, database
    finally:
        await database.stop()
        await bus.stop()
        postgres_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


class _Seen:
    """A publisher or observer noting, per call, its drivers and the fixes stored by then."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.calls: list[tuple[list[str], int]] = []

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        try:
            stored = await self._database.pool.fetchval(
                "SELECT count(*) FROM location_history WHERE driver_id = $1", DRIVER
            )
        except asyncpg.UndefinedTableError:  # the failing-write test took the table away
            stored = -1
        self.calls.append(([u.driver_id for u in updates], int(stored)))


def _entry(first_s: int, count: int) -> StreamEntry:
    """One stream entry of ``count`` fixes a second apart, as the gateway appends it."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    batch = driver_pb2.LocationBatch()
    for s in range(first_s, first_s + count):
        fix = batch.fixes.add(accuracy_m=5.0, speed_mps=8.0, heading_deg=90.0)
        fix.position.CopyFrom(common_pb2.LatLng(lat=35.9 + s / 10_000, lng=14.5))
        fix.captured_at.FromDatetime(start + dt.timedelta(seconds=s))
    fields = {
        b"driver": DRIVER.encode(),
        b"tenant": b"t1",
        b"received_ms": str(int(dt.datetime.now(dt.UTC).timestamp() * 1000)).encode(),
        b"data": batch.SerializeToString(),
    }
    return StreamEntry("test:pings:0", f"{first_s + 1}-0", fields)


def _processor(settings: Settings, bus: Bus, database: Database) -> tuple[Processor, _Seen, _Seen]:
    processor = Processor(settings, bus, database, None)
    # The round's parts, without the reading loop (start() would read the real shards).
    processor.history = History(database.pool, settings)
    processor.live = LiveState(bus.redis)
    publisher, observer = _Seen(database), _Seen(database)
    processor.add_publisher(publisher)
    processor.add_observer(observer)
    return processor, publisher, observer


async def test_positions_are_shown_before_the_history_write_observers_after(
    parts: tuple[Settings, Bus, Database],
) -> None:
    processor, publisher, observer = _processor(*parts)

    await processor.process([_entry(0, 3)])

    assert publisher.calls == [([DRIVER], 0)]
    assert observer.calls == [([DRIVER], 3)]


async def test_a_failed_history_write_shows_positions_but_steps_no_observer(
    parts: tuple[Settings, Bus, Database],
) -> None:
    settings, bus, database = parts
    processor, publisher, observer = _processor(settings, bus, database)
    await database.pool.execute("ALTER TABLE location_history RENAME TO location_history_gone")

    with pytest.raises(asyncpg.UndefinedTableError):
        await processor.process([_entry(0, 3)])

    assert [drivers for drivers, _ in publisher.calls] == [[DRIVER]]
    assert observer.calls == []


def _unreadable(entry_id: str) -> StreamEntry:
    """An entry the gateway could have written but this processor cannot read."""
    good = _entry(0, 1)
    return dataclasses.replace(good, entry_id=entry_id, fields={**good.fields, b"data": b"\xff"})


async def test_an_unreadable_entry_is_set_aside_and_the_rest_of_its_round_processed(
    parts: tuple[Settings, Bus, Database],
) -> None:
    _, bus, _ = parts
    processor, publisher, _ = _processor(*parts)
    bad = _unreadable("7-0")

    await processor.process([bad, _entry(10, 2)])

    assert publisher.calls == [([DRIVER], 0)]
    [letter] = await dead_letters.buried(bus)
    assert (letter.stream, letter.entry_id) == ("test:pings:0", "7-0")
    assert letter.error.startswith("DecodeError")
    assert letter.fields == bad.fields


async def test_replay_appends_each_set_aside_entry_back_once(
    parts: tuple[Settings, Bus, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, bus, _ = parts
    processor, _, _ = _processor(*parts)
    bad = _unreadable("7-0")
    for _ in range(2):  # a retried round sets the same entry aside again
        await processor.process([bad])
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)

    listed = await asyncio.to_thread(_run_cli, "dead-letters")
    replayed = await asyncio.to_thread(_run_cli, "dead-letters", "--replay")

    assert listed.splitlines()[0] == "2 ping entries set aside"
    assert "test:pings:0 7-0  driver drv-round  DecodeError" in listed
    assert replayed == "1 entries appended back to their ping shards\n"
    assert await dead_letters.count(bus) == 0
    back: Any = await bus.redis.xrange("test:pings:0")
    assert [fields for _, fields in back] == [bad.fields]


def _run_cli(*argv: str) -> str:
    """What ``lastmile *argv`` prints (it must succeed)."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(argv) == 0
    return out.getvalue()
