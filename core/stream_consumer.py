"""The one shape of a consumer-group reader of the bus: every entry is handled at least once,
in stream order, and none is left behind.

Entries are handled one at a time and each is acked once handled. A refusal (a
``core.errors.ServiceError``: the entry asks for something the domain does not allow) is logged
and acked. A dependency outage (Redis or PostgreSQL restarting) stops the round at the entry
it hit: that entry and the ones after it stay pending and are taken again, in order, once the
dependency answers (a new read returns only new entries, so the consumer's own pending ones
are read first after a failure and at start). Any other error leaves that entry pending and
goes on with the next. Entries left pending by a consumer that died (or by this process before
a restart: consumer names carry the pid) are claimed once idle for ``claim_idle_ms``.
Handlers must therefore be idempotent.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from core.bus import Bus, StreamEntry
from core.errors import ServiceError
from core.outages import is_outage
from core.workers import cancel

log = logging.getLogger(__name__)


class GroupConsumer(abc.ABC):
    """A background component reading ``streams`` as ``consumer`` of ``group``; subclasses
    implement :meth:`handle`."""

    service_names: tuple[str, ...] = ()
    name = "group-consumer"

    def __init__(
        self,
        bus: Bus,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        block_ms: int,
        claim_idle_ms: int,
        retry_s: float,
    ) -> None:
        self._bus = bus
        self._streams = tuple(streams)
        self._group = group
        self._consumer = consumer
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer: a worker."""
        del server  # nothing to add to the gRPC server

    async def start(self) -> None:
        """Create the group (from the start of the streams) if missing and start reading."""
        for stream in self._streams:
            await self._bus.ensure_group(stream, self._group, "0")
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop reading; unacked entries stay pending and are claimed later."""
        await cancel(self._task)
        self._task = None

    @abc.abstractmethod
    async def handle(self, entry: StreamEntry) -> None:
        """Apply one entry (idempotently: see the module docstring)."""

    async def _run(self) -> None:
        next_claim = 0.0
        own_pending = True
        while True:
            try:
                if own_pending:
                    await self._handle_all(await self._own_pending())
                    own_pending = False
                now = asyncio.get_running_loop().time()
                if now >= next_claim:
                    next_claim = now + self._claim_idle_ms / 2000
                    claimed = await self._bus.claim_idle(
                        self._streams, self._group, self._consumer, self._claim_idle_ms
                    )
                    await self._handle_all(claimed)
                entries = await self._bus.read_group(
                    self._streams, self._group, self._consumer, block_ms=self._block_ms
                )
                await self._handle_all(entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                own_pending = True
                if is_outage(exc):
                    log.warning(
                        "%s waits for Redis/PostgreSQL", self.name, extra={"error": str(exc)}
                    )
                else:
                    log.exception("%s failed; retrying", self.name)
                await asyncio.sleep(self._retry_s)

    async def _own_pending(self) -> list[StreamEntry]:
        reply: Any = await self._bus.redis.xreadgroup(
            self._group, self._consumer, dict.fromkeys(self._streams, "0"), count=1000
        )
        return [
            StreamEntry(stream.decode(), entry_id.decode(), fields)
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def _handle_all(self, entries: Sequence[StreamEntry]) -> None:
        for entry in entries:
            try:
                await self.handle(entry)
            except ServiceError as exc:
                log.info("event refused", extra={"entry": entry.entry_id, "reason": str(exc)})
            except Exception as exc:
                if is_outage(exc):
                    raise  # this entry and the rest are taken again (see _run)
                log.exception("event failed; left pending", extra={"entry": entry.entry_id})
                continue
            await self._bus.ack(entry.stream, self._group, [entry.entry_id])
