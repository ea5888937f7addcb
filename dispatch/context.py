"""What dispatch's use cases share: settings, the database, the bus, and a way to wake the
outbox relay right after a commit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from core.bus import Bus
from core.db import Database
from core.settings import Settings


@dataclass
class DispatchContext:
    """Dependencies of the dispatch use cases, handed to each servicer and worker."""

    settings: Settings
    database: Database
    bus: Bus
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when webhook deliveries became due (new, redelivered, or next of an order).
    webhook_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wake_outbox(self) -> None:
        """Tell the relay there are new rows (it also polls, so this only cuts latency)."""
        self.outbox_wakeup.set()
