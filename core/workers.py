"""The one shape of a polling background component (a worker hosted by a service process):
one round of work at a time, again at once while a round says more is waiting, otherwise
after the poll interval or an earlier wake-up. A failed round is logged and retried after
the interval; stopping cancels the loop (whatever a round had not committed is done again)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PollingWorker(abc.ABC):
    """Subclasses implement :meth:`round`; ``wakeup`` cuts the wait short."""

    service_names: tuple[str, ...] = ()
    name = "worker"

    def __init__(self, interval_s: float, wakeup: asyncio.Event | None = None) -> None:
        self._interval_s = interval_s
        self.wakeup = wakeup if wakeup is not None else asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer: a worker."""
        del server  # nothing to add to the gRPC server

    async def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the loop; whatever it had not committed is done again by the next start."""
        await cancel(self._task)
        self._task = None

    @abc.abstractmethod
    async def round(self) -> bool:
        """Do one round of work; True when more is waiting right now."""

    async def _run(self) -> None:
        while True:
            try:
                more = await self.round()
            except Exception:
                log.exception("%s round failed; retrying", self.name)
                more = False
            if more:
                continue
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._interval_s)
