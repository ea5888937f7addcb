"""The tracking config each connected app is told, and its re-sending when a tenant's
intervals change.

The gateway keeps the intervals of its drivers' tenants in memory (one query per tenant on
first use, shared by the streams that connect at the same moment). A change made through
``FleetService.UpdateTrackingIntervals`` is announced on :data:`core.topics.TRACKING_INTERVALS`:
the gateway re-reads that tenant at once and calls the watchers of its open streams, which
send the config of their current mode. Every ``tracking_intervals_refresh_s`` it re-reads all
the tenants it knows, which catches a change whose announcement was lost (Redis away) and
drops tenants without streams.

A tenant whose intervals cannot be read (PostgreSQL away) gets the defaults meanwhile: the
drivers keep streaming, and the next successful read sends the right ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from lastmile.driver.v1 import driver_pb2

from core import topics
from core.bus import Bus
from core.db import Database
from core.settings import Settings
from core.tracking_intervals import Intervals, IntervalStore, effective, tracking_config
from core.workers import PollingWorker, cancel

log = logging.getLogger(__name__)

#: Pause before listening again after the announcements' subscription failed.
RETRY_S = 1.0
Watcher = Callable[[], None]


class TrackingConfigs(PollingWorker):
    """Tenants' intervals for this gateway's streams (a host component); see the module
    docstring."""

    name = "gateway-tracking-configs"

    def __init__(self, settings: Settings, bus: Bus, database: Database) -> None:
        super().__init__(settings.tracking_intervals_refresh_s)
        self._settings = settings
        self._bus = bus
        self._store = IntervalStore(database)
        self._known: dict[str, Intervals] = {}
        self._loading: dict[str, asyncio.Future[Intervals]] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the periodic re-read and the listener of announced changes."""
        await super().start()
        self._listener = asyncio.create_task(
            self._bus.listen(topics.TRACKING_INTERVALS, self._changed, RETRY_S),
            name=f"{self.name}-changes",
        )

    async def stop(self) -> None:
        """Stop both."""
        await cancel(self._listener)
        self._listener = None
        await super().stop()

    async def config(self, tenant_id: str, mode: int) -> driver_pb2.TrackingConfig:
        """What an app of the tenant in ``mode`` is told now."""
        return tracking_config(await self.intervals(tenant_id), mode, self._settings)

    async def intervals(self, tenant_id: str) -> Intervals:
        """The tenant's intervals in force, read once and then kept up to date."""
        known = self._known.get(tenant_id)
        if known is not None:
            return known
        pending = self._loading.get(tenant_id)
        if pending is None:
            pending = asyncio.ensure_future(self._first_read(tenant_id))
            self._loading[tenant_id] = pending
            pending.add_done_callback(lambda _: self._loading.pop(tenant_id, None))
        return await asyncio.shield(pending)

    def watch(self, tenant_id: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` whenever the tenant's intervals change, until the returned
        function is called."""
        self._watchers.setdefault(tenant_id, set()).add(watcher)

        def unwatch() -> None:
            watchers = self._watchers.get(tenant_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[tenant_id]

        return unwatch

    async def round(self) -> bool:
        """Forget tenants without streams; re-read the others."""
        for tenant_id in [t for t in self._known if t not in self._watchers]:
            del self._known[tenant_id]
        await self.reread(list(self._known))
        return False

    async def reread(self, tenant_ids: Sequence[str]) -> int:
        """Read the tenants' intervals again and tell the watchers of those that changed;
        returns how many changed."""
        if not tenant_ids:
            return 0
        stored = await self._store.load(tenant_ids)
        changed = 0
        for tenant_id in tenant_ids:
            now = effective(stored.get(tenant_id), self._settings)
            before = self._known.get(tenant_id)
            self._known[tenant_id] = now
            if before is not None and before != now:
                changed += 1
                for watcher in tuple(self._watchers.get(tenant_id, ())):
                    watcher()
        return changed

    async def _first_read(self, tenant_id: str) -> Intervals:
        try:
            stored = await self._store.load([tenant_id])
        except Exception as exc:
            log.warning(
                "tracking intervals not read, defaults meanwhile",
                extra={"tenant": tenant_id, "error": str(exc)},
            )
            # Kept, so that the next round's successful read tells the streams what changed.
            return self._known.setdefault(tenant_id, effective(None, self._settings))
        # An announced change read meanwhile is newer than this read: it stays.
        return self._known.setdefault(tenant_id, effective(stored.get(tenant_id), self._settings))

    async def _changed(self, payload: bytes) -> None:
        """Re-read a tenant as soon as its change is announced."""
        tenant_id = payload.decode()
        if tenant_id in self._known or tenant_id in self._watchers:
            await self.reread([tenant_id])
