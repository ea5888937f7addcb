"""One fault test from start to report: a fleet warms up (drivers streaming, orders picked up,
customers tracking), the fault hits while deliveries and new orders are under way, the
component comes back, and everything the platform confirmed is accounted for.

Timeline: ``warm_up`` -> ``fault_begins`` (work that must go through the fault starts) ->
the test breaks and heals a component -> ``finish`` (recovery, completion, drain, accounting).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from simulator.connection import Connection, addresses_of

from core.geo import LatLng
from tests.helpers import WaitTimeout, async_wait_until
from tests.integration.fault_fleet import FINAL, CustomerWatch, FleetDriver, micros
from tests.integration.fault_orders import TENANT, Desk, OrderFlow, new_key
from tests.integration.fault_support import FaultPlatform, FaultReport
from tracking.processor import GROUP as TRACKING_GROUP
from tracking.processor import shard_streams

DRIVERS = 6
ORDERS_BEFORE = 3  # picked up before the fault, delivered through it
ORDERS_DURING = 2  # created when the fault hits
#: Batches each driver gets acked before the fault, and after it healed.
BATCHES_BEFORE = BATCHES_AFTER = 10
WARM_UP_WITHIN_S = 45.0
RECOVER_WITHIN_S = 45.0
COMPLETE_WITHIN_S = 45.0
STORED_WITHIN_S = 45.0

Fix = tuple[str, int]


class Scenario:
    """The clients of one fault test and their ledgers; see the module docstring."""

    def __init__(self, platform: FaultPlatform, paths: list[list[LatLng]], fault: str) -> None:
        settings = platform.settings
        self.fault = fault
        self._dsn = settings.database_url
        self._redis = aioredis.Redis.from_url(settings.redis_url)
        self._ping_streams = shard_streams(settings)
        self.connection = Connection(
            settings, addresses_of(settings, platform.platform.edge_address), TENANT
        )
        label = f"{fault}-{uuid.uuid4().hex[:6]}"
        self.drivers = [
            FleetDriver(self.connection, f"{label}-d{i}", paths[i % len(paths)])
            for i in range(DRIVERS)
        ]
        self.retries: Counter[str] = Counter()
        self.desk = Desk(self.connection, self.retries)
        self.flows: list[OrderFlow] = []
        self.watches: list[CustomerWatch] = []
        self.problems: list[str] = []
        self._background: list[asyncio.Task[Any]] = []
        self._work: list[asyncio.Task[Any]] = []
        self._following: list[asyncio.Task[Any]] = []
        self._stop_driving = asyncio.Event()
        self._reconnects_before: list[int] = []

    async def __aenter__(self) -> Scenario:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_driving.set()
        tasks = self._background + self._work + self._following
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.connection.close()
        await self._redis.aclose()

    # --- phases ----------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Drivers connected and streaming, orders picked up, every customer seeing the
        driver move."""
        await asyncio.gather(*(self.desk.register(d.driver_id) for d in self.drivers))
        for driver in self.drivers:
            self._background.append(asyncio.create_task(driver.link.run()))
            self._background.append(asyncio.create_task(driver.drive(self._stop_driving)))
        flows = [self._flow(i) for i in range(ORDERS_BEFORE)]
        await asyncio.gather(*(self._take_to_pickup(flow) for flow in flows))

        async def steady() -> bool:
            self._raise_failures()
            moving = all(w.updates_since(0.0, frozenset({"position"})) for w in self.watches)
            driving = all(d.batches_confirmed_since(0.0) >= BATCHES_BEFORE for d in self.drivers)
            return moving and driving

        await async_wait_until(steady, WARM_UP_WITHIN_S, interval=0.1, what="a steady fleet")

    def fault_begins(self) -> float:
        """Start what must get through the fault; returns the fault's start (monotonic)."""
        began = time.monotonic()
        self._reconnects_before = [d.reconnects for d in self.drivers]
        for flow in list(self.flows):
            self._work.append(asyncio.create_task(self.desk.deliver(flow)))
        for index in range(ORDERS_BEFORE, ORDERS_BEFORE + ORDERS_DURING):
            self._work.append(asyncio.create_task(self._new_order(self._flow(index))))
        return began

    async def noticed(self, what: str, predicate: Callable[[], bool]) -> None:
        """Wait until the clients felt the fault (it is real, not a no-op)."""

        async def felt() -> bool:
            self._raise_failures()
            return predicate()

        await async_wait_until(felt, 30.0, interval=0.05, what=f"clients noticing {what}")

    async def pings_in_flight(self) -> int:
        """Ping entries a tracking process has read and not acked yet."""
        total = 0
        for stream in self._ping_streams:
            summary: Any = await self._redis.xpending(stream, TRACKING_GROUP)
            total += int(summary["pending"])
        return total

    async def freeze_mid_round(self, platform: FaultPlatform) -> int:
        """Freeze tracking (SIGSTOP) at a moment it holds ping entries read and not acked,
        so that a kill then leaves them pending; returns how many."""

        async def caught() -> int:
            platform.pause("tracking", True)
            held = await self.pings_in_flight()
            if not held:
                platform.pause("tracking", False)
            return held

        return await async_wait_until(caught, 30.0, interval=0.005, what="pings in flight")

    def every_driver_cut_off(self, times: int = 1) -> bool:
        """Whether every driver's stream broke (or failed to reconnect) ``times`` times since
        the fault began."""
        return all(
            d.reconnects >= before + times
            for d, before in zip(self.drivers, self._reconnects_before, strict=True)
        )

    def driver_reconnects(self) -> int:
        """Reconnects of every driver stream so far."""
        return sum(d.reconnects for d in self.drivers)

    def calls_retried(self) -> int:
        """Unary calls retried so far."""
        return sum(self.retries.values())

    async def finish(self, began: float, restarting: float, healed: float) -> FaultReport:
        """Recovery, completion of every order, drain, and the accounting. ``began``: the
        kill; ``restarting``: the restart began (what clients get from then on comes from the
        new process: the "after the fault" of the checks); ``healed``: it serves again."""
        recovered = await self._recovered(restarting)
        delivered = await self._complete()
        await self._drain(restarting)
        acked, stored = await self._stored_fixes()
        await self._all_pings_acked()
        counts = Counter(stored)
        return FaultReport(
            fault=self.fault,
            acked_fixes=len(acked),
            stored_fixes=sum(counts[f] for f in acked),
            lost_fixes=len(acked - set(counts)),
            duplicated_fixes=sum(n - 1 for n in counts.values() if n > 1),
            orders_accepted=sum(1 for f in self.flows if f.order_id),
            orders_lost=await self._orders_lost(),
            orders_bad_history=await self._bad_histories(),
            proofs_confirmed=sum(1 for f in self.flows if f.proof_id),
            proofs_lost=await self._proofs_lost(),
            customer_streams=len(self.watches),
            customers_without_updates=sum(1 for w in self.watches if not w.live_since(restarting)),
            driver_reconnects=self.driver_reconnects(),
            customer_reconnects=sum(w.reconnects for w in self.watches),
            client_retries=self.calls_retried(),
            outage_s=healed - began,
            recovered_s=recovered - began if recovered else math.nan,
            orders_done_s=delivered - began,
        )

    # --- orders and customers --------------------------------------------------------------

    def _flow(self, index: int) -> OrderFlow:
        driver = self.drivers[index]
        path = driver.route
        flow = OrderFlow(new_key(self.fault), driver, path[0], path[len(path) // 2])
        self.flows.append(flow)
        return flow

    async def _take_to_pickup(self, flow: OrderFlow) -> None:
        await self.desk.place(flow)
        self._follow(flow)
        await self.desk.assign(flow)
        await self.desk.pick_up(flow)

    async def _new_order(self, flow: OrderFlow) -> None:
        await self._take_to_pickup(flow)
        await self.desk.deliver(flow)

    def _follow(self, flow: OrderFlow) -> None:
        watch = CustomerWatch(self.connection, flow.order_id, flow.tracking_token)
        self.watches.append(watch)
        self._following.append(asyncio.create_task(watch.follow()))

    def _raise_failures(self) -> None:
        for task in self._work + self._following + self._background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"a client failed: {task.exception()!r}")

    # --- the end ---------------------------------------------------------------------------

    async def _recovered(self, since: float) -> float | None:
        """When every driver got an ack and every customer an update after ``since``."""

        async def back() -> bool:
            self._raise_failures()
            drivers = all(d.batches_confirmed_since(since) for d in self.drivers)
            customers = all(w.live_since(since) for w in self.watches)
            return drivers and customers

        try:
            await async_wait_until(back, RECOVER_WITHIN_S, interval=0.05, what="recovery")
        except WaitTimeout as exc:
            self.problems.append(str(exc))
            return None
        return time.monotonic()

    async def _complete(self) -> float:
        """Every order delivered and every customer stream ended at the final status; returns
        when the last order was delivered (monotonic)."""
        delivered = math.nan
        for name, tasks in (("order lifecycles", self._work), ("Track streams", self._following)):
            done, pending = await asyncio.wait(tasks, timeout=COMPLETE_WITHIN_S)
            if math.isnan(delivered):
                delivered = time.monotonic()
            if pending:
                self.problems.append(f"{len(pending)} {name} unfinished")
                self.problems += [w.describe() for w in self.watches if w.status not in FINAL]

            for task in done:
                if task.exception() is not None:
                    self.problems.append(f"{name}: {task.exception()!r}")
        return delivered

    async def _drain(self, since: float) -> None:
        """Drive on a little, then stop and close each stream once everything sent is acked."""

        async def driven() -> bool:
            return all(d.batches_confirmed_since(since) >= BATCHES_AFTER for d in self.drivers)

        with contextlib.suppress(WaitTimeout):
            await async_wait_until(driven, RECOVER_WITHIN_S, interval=0.1, what="driving on")
        self._stop_driving.set()
        await asyncio.gather(*(d.link.close() for d in self.drivers))
        _, pending = await asyncio.wait(self._background, timeout=30.0)
        if pending:
            self.problems.append(f"{len(pending)} driver tasks did not end")
        for driver in self.drivers:
            if driver.unconfirmed():
                self.problems.append(
                    f"{driver.driver_id}: events never acked {sorted(driver.unconfirmed())}"
                )

    async def _stored_fixes(self) -> tuple[set[Fix], list[Fix]]:
        """The acked fixes, and every stored row of the fleet (waiting until the acked ones
        are in, or the time is up)."""
        acked: set[Fix] = set().union(*(d.acked_fixes() for d in self.drivers))
        rows: list[Fix] = []

        async def all_in() -> bool:
            nonlocal rows
            rows = await self._history_rows()
            return acked <= set(rows)

        with contextlib.suppress(WaitTimeout):
            await async_wait_until(all_in, STORED_WITHIN_S, interval=0.2, what="history")
        return acked, rows

    async def _all_pings_acked(self) -> None:
        """No ping entry left pending in the tracking group (a killed process's included)."""

        async def none_left() -> bool:
            return await self.pings_in_flight() == 0

        try:
            await async_wait_until(none_left, STORED_WITHIN_S, interval=0.2, what="pings acked")
        except WaitTimeout:
            self.problems.append(f"{await self.pings_in_flight()} ping entries never acked")

    async def _history_rows(self) -> list[Fix]:
        conn = await asyncpg.connect(self._dsn)
        try:
            records = await conn.fetch(
                "SELECT driver_id, recorded_at FROM location_history WHERE driver_id = ANY($1)",
                [d.driver_id for d in self.drivers],
            )
        finally:
            await conn.close()
        return [(r["driver_id"], micros(r["recorded_at"])) for r in records]

    async def _orders_lost(self) -> int:
        lost = 0
        for flow in self.flows:
            if not flow.order_id:
                continue
            try:
                await self.desk.status(flow.order_id)
            except Exception as exc:
                self.problems.append(f"{flow.order_id}: {exc!r}")
                lost += 1
        return lost

    async def _bad_histories(self) -> int:
        bad = 0
        for flow in self.flows:
            if flow.order_id:
                found = await self.desk.history_problems(flow)
                self.problems += found
                bad += bool(found)
        return bad

    async def _proofs_lost(self) -> int:
        lost = 0
        for flow in self.flows:
            if flow.proof_id and not await self.desk.proof_retrievable(flow):
                self.problems.append(f"{flow.order_id}: proof {flow.proof_id} not retrievable")
                lost += 1
        return lost
