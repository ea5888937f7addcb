"""Who serves an order.

- ``platform``: the platform's own dispatch decides (offers and route updates on the drivers'
  streams); the simulator only answers as the drivers.
- ``baseline``: a deliberately simple reference policy for comparisons (the "greedy
  nearest-idle-driver baseline" on the same order stream): the operator's desk gives each
  order, in arrival order, to the idle driver nearest its pickup (straight-line distance) with
  ``DispatchService.AssignOrder``, and tells that driver. It is not the platform's dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from grpclib.exceptions import GRPCError
from lastmile_client.lastmile.dispatch.v1 import AssignOrderRequest

from core.geo import LatLng, haversine_m
from simulator.connection import Connection
from simulator.driver import Driver
from simulator.metrics import Recorder

# Wall seconds between looks for idle drivers when nothing else wakes the desk.
IDLE_CHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class Job:
    """An order waiting for a driver."""

    order_id: str
    pickup: LatLng
    drop_off: LatLng


class BaselineDesk:
    """Greedy nearest-idle-driver assignment through AssignOrder."""

    def __init__(self, drivers: list[Driver], connection: Connection, recorder: Recorder) -> None:
        self._drivers = drivers
        self._connection = connection
        self._recorder = recorder
        self._waiting: deque[Job] = deque()
        self._wake = asyncio.Event()

    def submit(self, job: Job) -> None:
        """An order accepted by its origin, to be assigned."""
        self._waiting.append(job)
        self._wake.set()

    def nudge(self) -> None:
        """A driver may have become idle."""
        self._wake.set()

    @property
    def waiting(self) -> int:
        """Orders without a driver yet."""
        return len(self._waiting)

    def nearest_idle(self, point: LatLng) -> Driver | None:
        """The idle driver closest to ``point`` (ties: the first registered)."""
        idle = [d for d in self._drivers if d.idle]
        return min(idle, key=lambda d: haversine_m(d.position, point), default=None)

    async def run(self) -> None:
        """Assign while there are waiting orders and idle drivers; wait otherwise."""
        while True:
            # A short timeout as well: drivers become idle without telling the desk.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_CHECK_S):
                    await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                driver = self.nearest_idle(self._waiting[0].pickup)
                if driver is None:
                    break
                job = self._waiting.popleft()
                await self._assign(job, driver)

    async def _assign(self, job: Job, driver: Driver) -> None:
        try:
            await self._connection.dispatch().assign_order(
                AssignOrderRequest(
                    order_id=job.order_id,
                    driver_id=driver.driver_id,
                    reason="simulator baseline: nearest idle driver",
                )
            )
        except GRPCError as exc:
            self._recorder.counts["assign_failed"] += 1
            self._recorder.steps["assignment"] = (
                f"baseline AssignOrder failed: {exc.status.name} {exc.message or ''}".strip()
            )
            return
        self._recorder.steps.setdefault("assignment", "done: baseline via AssignOrder")
        self._recorder.orders[job.order_id].driver_id = driver.driver_id
        self._recorder.counts["assigned"] += 1
        driver.assign(job.order_id, job.pickup, job.drop_off)
