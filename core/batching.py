"""Lookups by key coalesced into one call per batch, for bursts of identical reads.

Thousands of Track streams opening together (a reconnect) each want the same kind of row by
key. Each caller awaits :meth:`BatchLoader.load`; one task takes every key waiting (up to
``max_batch``), fetches them in one call, answers every caller, and goes on while more keys
came in meanwhile. Alone, a lookup costs what it cost before: its batch starts on the next
turn of the event loop. One fetch runs at a time per loader, which also bounds the
connections a burst can take.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable, Mapping


class BatchLoader[K: Hashable, V]:
    """Coalesces :meth:`load` calls into ``fetch`` calls; see the module docstring."""

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], max_batch: int
    ) -> None:
        self._fetch = fetch
        self._max_batch = max(1, max_batch)
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def load(self, key: K) -> V | None:
        """The value ``fetch`` gave for ``key`` (None when it gave none); raises what the
        batch's ``fetch`` raised."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            keys = list(itertools.islice(self._waiting, self._max_batch))
            callers = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._fetch(keys)
            except Exception as exc:
                for futures in callers.values():
                    for future in futures:
                        if not future.done():  # a caller that left meanwhile is skipped
                            future.set_exception(exc)
                continue
            for key, futures in callers.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(key))
