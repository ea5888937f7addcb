"""The one event bus: Redis Streams for durable, replayable events (consumer groups), Redis
pub/sub for live fan-out to whoever is listening right now."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ResponseError

from core.settings import Settings

log = logging.getLogger(__name__)


#: Retries of a Redis call that failed on the connection (a blip, a restart): few and quick,
#: so that a call's worst case stays near (RETRIES + 1) x the timeout.
REDIS_RETRIES = 3


def longest_block_s(settings: Settings) -> float:
    """The longest blocking read (XREAD/XREADGROUP BLOCK) any component issues, in seconds."""
    blocks_ms = (
        settings.watch_block_ms,
        settings.processor_block_ms,
        settings.order_consumer_block_ms,
    )
    return max(blocks_ms) / 1000


def connect_redis(settings: Settings) -> aioredis.Redis:
    """A client of the platform's Redis (binary-safe: values stay bytes), every call bounded:
    the read timeout is ``redis_timeout_s`` on top of the longest blocking read, so a BLOCK
    read is never cut short while a hung server is still noticed. Pub/sub listening waits
    without a timeout (redis-py does not apply it to subscriptions)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=False,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s + longest_block_s(settings),
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), retries=REDIS_RETRIES),
    )


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One event read from a stream."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]


class Bus:
    """Publishes and consumes platform events on Redis."""

    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings, client: aioredis.Redis | None = None) -> None:
        self._settings = settings
        self._client = client

    @property
    def redis(self) -> aioredis.Redis:
        """The underlying client (only after ``start``)."""
        if self._client is None:
            raise RuntimeError("bus not started")
        return self._client

    def register(self, server: object) -> None:
        """The bus has no servicer; present for the Component protocol."""

    async def start(self) -> None:
        """Connect and check Redis answers."""
        if self._client is None:
            self._client = connect_redis(self._settings)
        await self._client.ping()

    async def stop(self) -> None:
        """Close the connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- durable streams ---------------------------------------------------------------
    async def append(
        self,
        stream: str,
        fields: Mapping[Any, Any],
        maxlen: int | None = None,
    ) -> str:
        """Append one event; returns its id once Redis has it."""
        entry_id = await self.redis.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)
        return as_text(entry_id)

    async def append_many(self, items: Sequence[tuple[str, Mapping[Any, Any]]]) -> list[str]:
        """Append several events in one round trip; ids in the same order."""
        pipe = self.redis.pipeline(transaction=False)
        for stream, fields in items:
            pipe.xadd(stream, dict(fields))
        return [as_text(i) for i in await pipe.execute()]

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create a consumer group (and the stream) if missing."""
        try:
            await self.redis.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        count: int = 500,
        block_ms: int = 1000,
    ) -> list[StreamEntry]:
        """New entries for this consumer (blocking up to ``block_ms``); ack them after use."""
        reply: Any = await self.redis.xreadgroup(
            group, consumer, {s: ">" for s in streams}, count=count, block=block_ms
        )
        return [
            StreamEntry(as_text(stream), as_text(entry_id), fields)
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def claim_idle(
        self, streams: Sequence[str], group: str, consumer: str, min_idle_ms: int
    ) -> list[StreamEntry]:
        """Entries pending longer than ``min_idle_ms`` in any consumer of the group, now this
        consumer's: a dead replica's work, or this process's own before a restart (consumer
        names carry the pid, so a restarted process never sees its old pending entries)."""
        claimed: list[StreamEntry] = []
        for stream in streams:
            start = "0-0"
            while True:
                reply: Any = await self.redis.xautoclaim(
                    stream, group, consumer, min_idle_ms, start_id=start, count=1000
                )
                start = as_text(reply[0])
                # Entries trimmed from the stream come back without fields: nothing to redo.
                claimed += [StreamEntry(stream, as_text(i), f) for i, f in reply[1] if f]
                if start == "0-0":
                    break
        return claimed

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Mark entries processed by the group."""
        if entry_ids:
            await self.redis.xack(stream, group, *entry_ids)

    # --- live fan-out -------------------------------------------------------------------
    async def publish(self, channel: str, payload: bytes) -> None:
        """Send to current subscribers of a channel (fire and forget)."""
        await self.redis.publish(channel, payload)

    async def subscribe(self, *channels: str) -> AsyncIterator[tuple[str, bytes]]:
        """Yield (channel, payload) for messages on ``channels`` until the caller stops."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(*channels)
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield as_text(message["channel"]), bytes(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def listen(
        self, channel: str, handle: Callable[[bytes], Awaitable[None]], retry_s: float
    ) -> None:
        """Call ``handle`` with the payload of each message on ``channel``, until cancelled. A
        lost subscription, or a failed ``handle``, subscribes again after ``retry_s``: what
        was published meanwhile is missed (callers have a periodic round for that)."""
        while True:
            try:
                async for _, payload in self.subscribe(channel):
                    await handle(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "announcements not heard, retrying",
                    extra={"channel": channel, "error": str(exc)},
                )
                await asyncio.sleep(retry_s)


async def newest_id(client: aioredis.Redis, stream: str) -> str:
    """The id of the stream's newest entry now ("0-0" when it has none): a reader that starts
    after it sees every entry appended from now on."""
    newest: Any = await client.xrevrange(stream, count=1)
    return as_text(newest[0][0]) if newest else "0-0"


def as_text(value: Any) -> str:
    """A Redis reply value as text (replies are bytes: clients do not decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)
