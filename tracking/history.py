"""Location history in PostgreSQL: batched, idempotent writes and path queries.

Writes: the fixes of a batch are COPYed straight into ``location_history`` (PostgreSQL routes
each row to its day partition): one round trip and one commit per batch. Its unique index on
(driver_id, recorded_at) (migration 0003) refuses a replay of stream entries already stored (a
crash between the write and the XACK); the batch is then written again with ``INSERT ...
SELECT FROM unnest(<one array per column>) ON CONFLICT DO NOTHING``, which keeps the new rows
and skips the stored ones. (COPY into a staging table and a move on every batch took five round
trips, ~3.5x as long for the few dozen fixes of a round under moderate load.)

Partitions: day partitions are created on demand for the days the fixes fall on; a fix older
than the retention cutoff (its day will not be kept) is dropped with a log line and a metric.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from core import db
from core.settings import Settings
from tracking.positions import Fix

log = logging.getLogger(__name__)

COPY_SECONDS = Histogram(
    "lastmile_tracking_history_copy_seconds",
    "Time to write one batch of fixes into location_history (COPY).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REPLAYED = Counter(
    "lastmile_tracking_history_replays_total",
    "Batches holding fixes stored already (replayed stream entries), written again without them.",
)
DROPPED_OLD = Counter(
    "lastmile_tracking_fixes_too_old_total", "Fixes dropped: older than the history retention."
)
# Each column written, with the type of the array the replay insert unnests for it.
_COLUMN_TYPES = (
    ("driver_id", "text"),
    ("recorded_at", "timestamptz"),
    ("lat", "float8"),
    ("lng", "float8"),
    ("accuracy_m", "float8"),
    ("speed_mps", "float8"),
    ("heading_deg", "float8"),
    ("snapped_lat", "float8"),
    ("snapped_lng", "float8"),
    ("received_at", "timestamptz"),
)
COLUMNS = tuple(name for name, _ in _COLUMN_TYPES)
_INSERT = (
    f"INSERT INTO location_history ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_COLUMN_TYPES, start=1))
    + ") ON CONFLICT DO NOTHING"
)


class History:
    """Writes fixes and reads paths; keeps the set of known partition days."""

    def __init__(self, pool: asyncpg.Pool[Any], settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._days: set[dt.date] = set()

    def cutoff(self, today: dt.date | None = None) -> dt.date:
        """The oldest day kept."""
        today = today or dt.datetime.now(dt.UTC).date()
        return today - dt.timedelta(days=self._settings.history_retention_days)

    async def write(self, fixes: Sequence[Fix]) -> int:
        """Store fixes (replays are no-ops); returns how many were kept (not too old)."""
        cutoff = self.cutoff()
        kept = [f for f in fixes if f.at.date() >= cutoff]
        if len(kept) < len(fixes):
            dropped = len(fixes) - len(kept)
            DROPPED_OLD.inc(dropped)
            log.warning(
                "fixes older than the retention dropped",
                extra={"count": dropped, "cutoff": cutoff.isoformat()},
            )
        if not kept:
            return 0
        started = time.perf_counter()
        async with self._pool.acquire() as conn:
            await self._ensure_days(conn, {f.at.date() for f in kept})
            records = [_record(f) for f in kept]
            try:
                await conn.copy_records_to_table(
                    "location_history", records=records, columns=COLUMNS
                )
            except asyncpg.UniqueViolationError:
                REPLAYED.inc()
                columns = [list(values) for values in zip(*records, strict=True)]
                await conn.execute(_INSERT, *columns)
        COPY_SECONDS.observe(time.perf_counter() - started)
        return len(kept)

    async def _ensure_days(self, conn: Any, days: set[dt.date]) -> None:
        missing = days - self._days
        if not missing:
            return
        self._days |= await self.known_days(conn)
        for day in sorted(days - self._days):
            await db.ensure_history_partitions(conn, day, days_ahead=0)
            self._days.add(day)

    async def known_days(self, conn: Any) -> set[dt.date]:
        """Days that have a partition now."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'location_history'"
        )
        days = set()
        for row in rows:
            name: str = row["relname"]
            days.add(dt.datetime.strptime(name.removeprefix("location_history_"), "%Y%m%d").date())
        return days

    async def retain(self, today: dt.date) -> list[str]:
        """Drop partitions older than the retention, create the coming days' ones."""
        async with self._pool.acquire() as conn:
            dropped = await db.drop_history_partitions_before(conn, self.cutoff(today))
            await db.ensure_history_partitions(
                conn, today, days_ahead=self._settings.history_partitions_ahead
            )
            self._days = await self.known_days(conn)
        return dropped

    async def path(
        self, driver_id: str, start: dt.datetime, end: dt.datetime, limit: int
    ) -> list[asyncpg.Record]:
        """The driver's stored fixes in [start, end), oldest first."""
        async with self._pool.acquire() as conn:
            return list(
                await conn.fetch(
                    f"SELECT {', '.join(COLUMNS)} FROM location_history"
                    " WHERE driver_id = $1 AND recorded_at >= $2 AND recorded_at < $3"
                    " ORDER BY recorded_at LIMIT $4",
                    driver_id,
                    start,
                    end,
                    limit,
                )
            )


def _record(fix: Fix) -> tuple[Any, ...]:
    snapped = fix.snapped
    return (
        fix.driver_id,
        fix.at,
        fix.position.lat,
        fix.position.lng,
        fix.accuracy_m,
        fix.speed_mps,
        fix.heading_deg,
        snapped.lat if snapped else None,
        snapped.lng if snapped else None,
        fix.received_at,
    )
