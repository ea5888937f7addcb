"""Commands for connected drivers, from the bus to their streams.

One pattern subscription per gateway process (``lastmile:driver:*:commands``) instead of one
Redis connection per stream: every gateway sees every command and forwards those of the
drivers it holds. Commands are rare next to pings, so the fan-in costs little, and the
process keeps one pub/sub connection however many thousands of streams it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core import topics
from core.bus import Bus
from core.workers import cancel

log = logging.getLogger(__name__)

Sink = Callable[[bytes], None]
_PREFIX, _, _SUFFIX = topics.driver_commands_channel("\0").partition("\0")
RETRY_S = 1.0


class CommandRouter:
    """Forwards each driver's commands to the sinks of its open streams."""

    service_names: tuple[str, ...] = ()

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._sinks: dict[str, set[Sink]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Subscribe before the server accepts streams."""
        self._task = asyncio.create_task(self._run(), name="gateway-commands")
        await asyncio.wait_for(self._subscribed.wait(), timeout=10.0)

    async def stop(self) -> None:
        """Unsubscribe."""
        await cancel(self._task)
        self._task = None

    def attach(self, driver_id: str, sink: Sink) -> Callable[[], None]:
        """Deliver the driver's commands to ``sink`` until the returned function is called."""
        self._sinks.setdefault(driver_id, set()).add(sink)

        def detach() -> None:
            sinks = self._sinks.get(driver_id)
            if sinks is not None:
                sinks.discard(sink)
                if not sinks:
                    del self._sinks[driver_id]

        return detach

    async def _run(self) -> None:
        pattern = _PREFIX + "*" + _SUFFIX
        while True:
            pubsub = self._bus.redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        self._deliver(message["channel"], bytes(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command subscription lost, retrying", extra={"error": str(exc)})
                await asyncio.sleep(RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _deliver(self, channel: bytes | str, payload: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        driver_id = name.removeprefix(_PREFIX).removesuffix(_SUFFIX)
        for sink in tuple(self._sinks.get(driver_id, ())):
            sink(payload)
