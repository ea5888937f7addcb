"""Periodic work of the tracking process: history retention and ingest lag metrics.

Retention: every ``retention_interval_s`` (and once at start) drop location-history days older
than ``history_retention_days`` and create partitions for the next
``history_partitions_ahead`` days. Several tracking processes may do it at once: creation is
serialized by an advisory lock and dropping a missing table is harmless to retry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from prometheus_client import Gauge

from core.bus import Bus
from core.db import Database
from core.settings import Settings
from core.workers import cancel
from tracking.history import History
from tracking.processor import GROUP, shard_streams

log = logging.getLogger(__name__)

LAG = Gauge("lastmile_tracking_shard_lag_entries", "Entries not yet read by the group.", ["shard"])
PENDING = Gauge("lastmile_tracking_shard_pending_entries", "Entries read, not acked.", ["shard"])
METRICS_INTERVAL_S = 5.0


class Maintenance:
    """Retention job and lag gauges, as a host component."""

    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings, bus: Bus, database: Database) -> None:
        self._settings = settings
        self._bus = bus
        self._database = database
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Run retention once now, then keep both loops going."""
        await self.retain()
        self._tasks = [
            asyncio.create_task(self._every(self._settings.retention_interval_s, self.retain)),
            asyncio.create_task(self._every(METRICS_INTERVAL_S, self.measure_lag)),
        ]

    async def stop(self) -> None:
        """Cancel the loops."""
        for task in self._tasks:
            await cancel(task)
        self._tasks = []

    async def retain(self) -> None:
        """Drop expired partitions, prepare the coming ones."""
        history = History(self._database.pool, self._settings)
        dropped = await history.retain(dt.datetime.now(dt.UTC).date())
        if dropped:
            log.info("history partitions dropped", extra={"partitions": dropped})

    async def measure_lag(self) -> None:
        """Set the lag and pending gauges of each shard (XINFO GROUPS)."""
        for shard, stream in enumerate(shard_streams(self._settings)):
            groups: Any = await self._bus.redis.xinfo_groups(stream)
            for group in groups:
                name = group.get("name") or group.get(b"name")
                if (name.decode() if isinstance(name, bytes) else name) != GROUP:
                    continue
                PENDING.labels(str(shard)).set(int(group.get("pending", 0) or 0))
                lag = group.get("lag")
                if lag is not None:
                    LAG.labels(str(shard)).set(int(lag))

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job failed", extra={"job": job.__name__})
