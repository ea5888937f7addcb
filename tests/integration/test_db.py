"""Migrations and the location-history partitions on a real PostgreSQL.

Each test gets its own empty database, so they neither see nor disturb the services'.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from core.db import (
    Database,
    Migration,
    drop_history_partitions_before,
    ensure_history_partitions,
    load_migrations,
    migrate,
)
from core.geo import LatLng
from core.settings import Settings
from ops.servers import PostgresServer
from tracking.history import History
from tracking.positions import Fix

pytestmark = pytest.mark.integration

if TYPE_CHECKING:  # the stubs' generic is not subscriptable at run time
    Connection = asyncpg.Connection[Any]


@pytest.fixture
async def fresh_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """DSN of a new, empty database owned by the application role; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name} OWNER lastmile")
    try:
        yield postgres_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        postgres_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def conn(fresh_dsn: str) -> AsyncIterator[Connection]:
    """A connection to the fresh database."""
    connection = await asyncpg.connect(fresh_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def migrated(conn: Connection) -> Connection:
    """The connection, with every migration applied."""
    await migrate(conn)
    return conn


async def _partitions(conn: Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'location_history'"
    )
    return {r["relname"] for r in rows}


def _partition(day: dt.date) -> str:
    return f"location_history_{day:%Y%m%d}"


def _at(day: dt.date, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second), tzinfo=dt.UTC)


async def _insert_fix(conn: Connection, at: dt.datetime) -> str:
    """Insert one GPS fix; return the partition that received it."""
    part: str = await conn.fetchval(
        "INSERT INTO location_history (driver_id, recorded_at, lat, lng)"
        " VALUES ('d-1', $1, 35.9, 14.5) RETURNING tableoid::regclass::text",
        at,
    )
    return part


# --- migrations ----------------------------------------------------------------------------


async def test_migrate_applies_everything_once(conn: Connection) -> None:
    everything = [m.version for m in load_migrations()]
    assert everything and everything[0] == 1

    assert await migrate(conn) == everything
    assert await migrate(conn) == []

    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in load_migrations()
    ]
    assert await conn.fetchval("SELECT to_regclass('public.orders')") is not None


async def test_concurrent_migrate_from_two_connections_is_safe(
    conn: Connection, fresh_dsn: str
) -> None:
    other = await asyncpg.connect(fresh_dsn)
    try:
        results = await asyncio.gather(migrate(conn), migrate(other))
    finally:
        await other.close()
    everything = [m.version for m in load_migrations()]
    # One connection applied everything; the other waited on the lock and found nothing to do.
    assert sorted(results, key=len) == [[], everything]
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(everything)


async def test_failed_migration_rolls_back_everything(conn: Connection) -> None:
    good, *_ = load_migrations()
    broken = Migration(version=2, name="broken", sql="CREATE TABLE half_done (); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(conn, [good, broken])
    # All or none: not even the first migration, nor the bookkeeping table, is left.
    assert await conn.fetchval("SELECT to_regclass('public.schema_migrations')") is None
    assert await conn.fetchval("SELECT to_regclass('public.orders')") is None
    assert await conn.fetchval("SELECT to_regclass('public.half_done')") is None


# --- history partitions --------------------------------------------------------------------


async def test_ensure_creates_three_days_and_is_idempotent(migrated: Connection) -> None:
    today = dt.datetime.now(dt.UTC).date()
    expected = [_partition(today + dt.timedelta(days=n)) for n in range(3)]

    assert await ensure_history_partitions(migrated, today) == expected
    assert await _partitions(migrated) == set(expected)
    assert await ensure_history_partitions(migrated, today) == expected
    assert await _partitions(migrated) == set(expected)


async def test_concurrent_ensure_from_several_connections_is_safe(
    migrated: Connection, fresh_dsn: str
) -> None:
    day = dt.date(2031, 5, 1)
    others = [await asyncpg.connect(fresh_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(ensure_history_partitions(c, day) for c in [migrated, *others])
        )
    finally:
        for other in others:
            await other.close()
    expected = [_partition(day + dt.timedelta(days=n)) for n in range(3)]
    assert results == [expected] * 4
    assert await _partitions(migrated) == set(expected)


async def test_rows_land_in_their_day_partition(migrated: Connection) -> None:
    today = dt.datetime.now(dt.UTC).date()
    tomorrow = today + dt.timedelta(days=1)
    await ensure_history_partitions(migrated, today)

    assert await _insert_fix(migrated, _at(today, 12)) == _partition(today)
    # Partitions are UTC days: the last second belongs to today, midnight to tomorrow.
    assert await _insert_fix(migrated, _at(today, 23, 59, 59)) == _partition(today)
    assert await _insert_fix(migrated, _at(tomorrow, 0)) == _partition(tomorrow)
    assert await migrated.fetchval("SELECT count(*) FROM location_history") == 3


async def test_a_row_for_a_day_without_partition_is_refused(migrated: Connection) -> None:
    today = dt.datetime.now(dt.UTC).date()
    await ensure_history_partitions(migrated, today)
    with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
        await _insert_fix(migrated, _at(today + dt.timedelta(days=10), 8))
    with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
        await _insert_fix(migrated, _at(today - dt.timedelta(days=1), 8))


async def test_retention_drops_only_days_before_the_cutoff(migrated: Connection) -> None:
    today = dt.date(2031, 3, 20)
    old = today - dt.timedelta(days=10)
    await ensure_history_partitions(migrated, old)  # old, old+1, old+2
    await ensure_history_partitions(migrated, today)  # today .. today+2
    await _insert_fix(migrated, _at(old + dt.timedelta(days=2), 9))
    await _insert_fix(migrated, _at(today, 9))
    cutoff = old + dt.timedelta(days=2)

    dropped = await drop_history_partitions_before(migrated, cutoff)

    assert sorted(dropped) == [_partition(old), _partition(old + dt.timedelta(days=1))]
    assert await _partitions(migrated) == {
        _partition(cutoff),
        *(_partition(today + dt.timedelta(days=n)) for n in range(3)),
    }
    # The rows of the days kept are still there.
    assert await migrated.fetchval("SELECT count(*) FROM location_history") == 2
    assert await drop_history_partitions_before(migrated, cutoff) == []


async def test_history_batches_are_copied_and_replays_store_only_the_new_fixes(
    fresh_dsn: str,
) -> None:
    settings = Settings.from_env({}).replace(database_url=fresh_dsn)
    database = Database(settings)
    await database.start()
    try:
        history = History(database.pool, settings)
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)

        def fixes(seconds: range) -> list[Fix]:
            return [
                Fix(
                    driver_id="drv-history",
                    at=start + dt.timedelta(seconds=s),
                    position=LatLng(35.9 + s / 10_000, 14.5),
                    accuracy_m=5.0,
                    speed_mps=8.0,
                    heading_deg=90.0,
                    received_at=start + dt.timedelta(seconds=s + 1),
                    snapped=LatLng(35.9 + s / 10_000, 14.5001),
                )
                for s in seconds
            ]

        def replays() -> float:
            return REGISTRY.get_sample_value("lastmile_tracking_history_replays_total") or 0.0

        before = replays()
        assert await history.write(fixes(range(0, 10))) == 10
        assert replays() == before
        # A replayed round overlapping the stored one, with fixes of its own.
        assert await history.write(fixes(range(5, 15))) == 10
        assert replays() == before + 1

        rows = await history.path("drv-history", start, start + dt.timedelta(minutes=1), 100)
        assert [r["recorded_at"] for r in rows] == [f.at for f in fixes(range(0, 15))]
        assert rows[3]["lat"] == pytest.approx(35.9003)
        assert rows[3]["snapped_lng"] == pytest.approx(14.5001)
    finally:
        await database.stop()
