"""Re-checks of the tracking links behind a process's open Track streams, one query per batch
of links instead of one per stream.

A Track stream must end once its link is revoked, has expired, or no longer opens the order it
follows. Every ``track_token_check_s`` the process re-reads the rows of every watched link, up
to ``BATCH`` digests a query, and ends the streams whose link failed (their ``on_end`` wakes
them and they return). Streams checking for themselves cost one query each per interval:
10,000 open streams made 10,000 queries, and streams opened together (a reconnect) queried
together.

A revocation does not wait for the next round: dispatch announces it on
:data:`core.topics.TRACKING_LINKS` and the process re-checks the links of that order's streams
at once. The round still catches what no announcement covers: expiry, or an announcement lost
while Redis was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from core import topics
from core.bus import Bus
from core.db import Database
from core.errors import ServiceError
from core.settings import Settings
from core.workers import PollingWorker, cancel
from tracking.customer_snapshot import checked_order, read_links

#: Links re-read per query.
BATCH = 1000
#: Pause before listening again after the announcements' subscription failed.
RETRY_S = 1.0


@dataclass(eq=False)
class _Watch:
    order_id: str
    on_end: Callable[[], None]


class LinkChecks(PollingWorker):
    """The periodic re-check (a host component); see the module docstring."""

    name = "tracking-link-checks"

    def __init__(self, settings: Settings, database: Database, bus: Bus) -> None:
        super().__init__(settings.track_token_check_s)
        self._database = database
        self._bus = bus
        self._watches: dict[str, set[_Watch]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the periodic re-check and the listener of revocations."""
        await super().start()
        self._listener = asyncio.create_task(
            self._bus.listen(topics.TRACKING_LINKS, self._revoked, RETRY_S),
            name=f"{self.name}-revocations",
        )

    async def stop(self) -> None:
        """Stop both."""
        await cancel(self._listener)
        self._listener = None
        await super().stop()

    async def round(self) -> bool:
        """Re-check every watched link; the next round comes after the interval."""
        await self.check()
        return False

    @contextlib.asynccontextmanager
    async def watch(
        self, digest: str, order_id: str, on_end: Callable[[], None]
    ) -> AsyncIterator[None]:
        """While open, ``on_end`` is called once a re-check finds that the link with this
        digest no longer opens ``order_id``."""
        watch = _Watch(order_id, on_end)
        self._watches.setdefault(digest, set()).add(watch)
        try:
            yield
        finally:
            watches = self._watches.get(digest)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[digest]

    async def check(self, order_id: str | None = None) -> int:
        """Re-read every watched link now (only those of ``order_id``'s streams when given)
        and end the streams of those that failed; how many streams were ended."""
        digests = [
            digest
            for digest, watches in self._watches.items()
            if order_id is None or any(w.order_id == order_id for w in watches)
        ]
        ended = 0
        for start in range(0, len(digests), BATCH):
            part = digests[start : start + BATCH]
            rows = await read_links(self._database, part)
            now = dt.datetime.now(dt.UTC)
            for digest in part:
                for watch in list(self._watches.get(digest, ())):
                    if not _opens(rows.get(digest), watch.order_id, now):
                        watch.on_end()
                        ended += 1
        return ended

    async def _revoked(self, payload: bytes) -> None:
        """Re-check an order's links as soon as dispatch announces a revocation."""
        await self.check(payload.decode())


def _opens(row: Any, order_id: str, now: dt.datetime) -> bool:
    try:
        return checked_order(row, now).order_id == order_id
    except ServiceError:
        return False
