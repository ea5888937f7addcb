"""The one PostgreSQL access layer: an asyncpg pool, versioned migrations applied at start-up,
and the day partitions of the location history."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from core.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    # A plain connection or one borrowed from the pool.
    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant shared by all processes: serializes concurrent start-ups applying migrations.
_MIGRATION_LOCK = 0x1A57_0001
# The same for creating location-history partitions.
_PARTITION_LOCK = 0x1A57_0002


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned schema change: ``NNNN_name.sql``."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations in version order; refuses gaps and duplicates."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration {migration.version:04d} found where {expected:04d} was due"
            )
    return found


async def migrate(conn: Conn, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations in one transaction (all or none); returns the versions applied.

    Safe to run from several processes at once: they queue on an advisory lock.
    """
    todo = load_migrations() if migrations is None else migrations
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in todo:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
            log.info(
                "migration applied",
                extra={"version": migration.version, "migration": migration.name},
            )
    return applied


async def ensure_history_partitions(conn: Conn, today: dt.date, days_ahead: int = 2) -> list[str]:
    """Create the location-history partitions from ``today`` to ``today + days_ahead``.

    Safe to run from several processes at once: ``CREATE TABLE IF NOT EXISTS`` is not (two
    creators of one partition collide), so they queue on an advisory lock.
    """
    names = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        for offset in range(days_ahead + 1):
            day = today + dt.timedelta(days=offset)
            names.append(await conn.fetchval("SELECT lastmile_ensure_history_partition($1)", day))
    return names


async def drop_history_partitions_before(conn: Conn, cutoff: dt.date) -> list[str]:
    """Drop whole days of location history older than ``cutoff`` (retention)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'location_history'"
    )
    dropped = []
    for row in rows:
        name: str = row["relname"]
        day = dt.datetime.strptime(name.removeprefix("location_history_"), "%Y%m%d").date()
        if day < cutoff:
            await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
    return dropped


async def keep_session(conn: asyncpg.Connection[Any]) -> None:
    """What a connection goes back to the pool with: asyncpg still rolls back a transaction
    left open, and nothing else needs undoing, because the platform keeps no session state
    (advisory locks are transaction-level; no LISTEN, no SET; tests/unit/test_session_state.py
    guards this). asyncpg's default reset is a query on every release: a round trip and ~3 % of
    a tracking process's samples while thousands of Track streams open."""
    del conn


class Database:
    """The process's connection pool; migrates the schema when it starts."""

    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool[Any] | None = None

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        """The open pool (only after ``start``)."""
        if self._pool is None:
            raise RuntimeError("database not started")
        return self._pool

    def register(self, server: object) -> None:
        """A database has no servicer; present for the Component protocol."""

    async def start(self) -> None:
        """Open the pool, apply migrations, prepare today's partitions."""
        self._pool = await asyncpg.create_pool(
            self._settings.database_url,
            min_size=self._settings.db_pool_min,
            max_size=self._settings.db_pool_max,
            # Every statement and every new connection has a deadline: a hung server turns
            # into an error the caller sees instead of a call that never returns.
            timeout=self._settings.db_connect_timeout_s,
            command_timeout=self._settings.db_command_timeout_s,
            reset=keep_session,
        )
        async with self._pool.acquire() as conn:
            await migrate(conn)
            await ensure_history_partitions(conn, dt.datetime.now(dt.UTC).date())

    async def stop(self) -> None:
        """Close the pool (after the server drained its calls)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
