"""One simulation run: set up the city's origins and drivers on the platform, play the order
stream (rate curve or replay), let the actors work, reconcile every order with the platform,
and hand the recorder to the report."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lastmile_client.lastmile.common.v1 import OrderStatus
from lastmile_client.lastmile.dispatch.v1 import Driver as DriverMessage
from lastmile_client.lastmile.dispatch.v1 import UpsertDriverRequest
from lastmile_client.lastmile.driver.v1 import TrackingMode

from core.geo import LatLng, haversine_m
from simulator.assign import BaselineDesk, Job
from simulator.city import City
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.curve import arrivals
from simulator.customer import Customer
from simulator.driver import Driver
from simulator.driver_link import DriverLink, default_config
from simulator.gps import GpsNoise
from simulator.leftovers import order_ref, retire_leftovers
from simulator.metrics import FINAL_OUTCOMES, OrderRecord, Recorder
from simulator.origin import SimOrigin
from simulator.scenario import Scenario, read_replay, replay_path
from simulator.world import World

Progress = Callable[[str], None]
# Wall seconds between progress lines.
PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """An order of the stream: when (simulated offset), from where, to where."""

    offset_s: float
    origin_index: int
    destination: LatLng
    window_s: float


def rng_for(scenario: Scenario, *parts: object) -> random.Random:
    """An independent generator per actor, derived from the scenario's seed (string seeds
    are hashed deterministically), so adding a driver does not change the order stream."""
    return random.Random(":".join([str(scenario.seed), *map(str, parts)]))


def plan_orders(scenario: Scenario, city: City, origins: list[LatLng]) -> list[PlannedOrder]:
    """The order stream: replayed from CSV, or drawn from the rate curve."""
    path = replay_path(scenario)
    if path is not None:
        planned = []
        for row in read_replay(path):
            where = LatLng(*row.origin)
            index = min(range(len(origins)), key=lambda i: haversine_m(origins[i], where))
            planned.append(
                PlannedOrder(row.offset_s, index, city.snap(LatLng(*row.destination)), row.window_s)
            )
        return planned
    rng = rng_for(scenario, "orders")
    times = arrivals(scenario.orders, scenario.start_s, scenario.duration_s, rng)
    return [
        PlannedOrder(
            t, rng.randrange(len(origins)), city.random_place(rng), scenario.orders.window_s
        )
        for t in times
    ]


class Simulation:
    """Everything of one run."""

    def __init__(
        self,
        scenario: Scenario,
        connection: Connection,
        city: City,
        progress: Progress | None = None,
    ) -> None:
        self.scenario = scenario
        self.connection = connection
        self.city = city
        self.progress = progress
        self.clock = SimClock(scenario.speed, scenario.start_s)
        self.recorder = Recorder()
        self.world = World(connection, self.clock, self.recorder)
        self.run_id = uuid.uuid4().hex[:8]
        self.origins: list[SimOrigin] = []
        self.drivers: list[Driver] = []
        self.links: list[DriverLink] = []
        self.planned: list[PlannedOrder] = []
        self.desk: BaselineDesk | None = None

    async def setup(self) -> None:
        """Origins and drivers registered on the platform, the order stream planned."""
        s = self.scenario
        place_rng = rng_for(s, "places")
        for i in range(s.origins.count):
            origin = SimOrigin(
                f"sim-origin-{i}",
                self.city.random_place(place_rng),
                s.origins,
                self.connection,
                self.clock,
                self.recorder,
                rng_for(s, "origin", i),
            )
            await origin.register()
            self.origins.append(origin)
        cancelled, carried = await retire_leftovers(
            self.connection.orders(), s.name, order_ref(s.name, self.run_id)
        )
        if cancelled or carried:
            self.recorder.note(
                f"earlier runs left {cancelled + carried} orders: {cancelled} cancelled,"
                f" {carried} carried by drivers, who finish them"
            )
        for i in range(s.fleet.drivers):
            self.drivers.append(await self._driver(i, self.city.random_place(place_rng)))
        self.planned = plan_orders(s, self.city, [o.location for o in self.origins])
        if s.policy == "baseline":
            self.desk = BaselineDesk(self.drivers, self.connection, self.recorder)
        else:
            self.recorder.steps["assignment"] = "platform dispatch (offers / route updates)"

    async def _driver(self, index: int, home: LatLng) -> Driver:
        s = self.scenario
        driver_id = f"sim-{s.name}-driver-{index}"
        await self.connection.dispatch().upsert_driver(
            UpsertDriverRequest(
                driver=DriverMessage(
                    driver_id=driver_id,
                    name=f"Sim Driver {index}",
                    capacity_units=s.fleet.capacity,
                    active=True,
                )
            )
        )
        rng = rng_for(s, "driver", index)
        holder: list[Driver] = []

        async def on_command(kind: str, value: object) -> None:
            if holder:
                await holder[0].on_command(kind, value)

        link = DriverLink(
            self.connection.gateway(driver_id),
            f"sim-{self.run_id}-{index}",
            self.recorder,
            on_command,
            default_config(TrackingMode.PASSIVE, 30.0, 120.0),
        )
        driver = Driver(
            driver_id,
            home,
            self.city,
            self.clock,
            link,
            self.connection.pod(driver_id),
            self.world,
            self.recorder,
            rng,
            GpsNoise(s.gps.noise_m, s.gps.outlier_rate, rng_for(s, "gps", index)),
            s.fleet.offer_accept_rate,
            s.fleet.speed_variation,
            s.fleet.reattempt_wait_s,
        )
        holder.append(driver)
        self.links.append(link)
        return driver

    async def _order(self, index: int, planned: PlannedOrder) -> None:
        """Place one order at its time, then let its origin and customer act."""
        s = self.scenario
        rng = rng_for(s, "customer", index)
        customer = Customer(
            planned.destination,
            s.customers,
            self.connection,
            self.clock,
            self.recorder,
            rng,
            order_ref(s.name, self.run_id),
        )
        origin = self.origins[planned.origin_index]
        await self.clock.sleep_until(planned.offset_s)
        placed = await customer.place(origin.origin_id, planned.window_s)
        now = self.clock.elapsed()
        record = OrderRecord(
            placed.order_id, origin.origin_id, now, now + planned.window_s, placed.tracking_token
        )
        self.recorder.orders[placed.order_id] = record
        self.world.origin_of[placed.order_id] = origin
        self.world.customer_of[placed.order_id] = customer
        following = asyncio.create_task(customer.follow(record))
        try:
            if not await origin.decide(placed.order_id):
                order = await self.world.get_order(placed.order_id)
                self.world.settle(placed.order_id, order.status)
                return
            if self.desk is not None:
                self.desk.submit(Job(placed.order_id, origin.location, planned.destination))
            await following
        finally:
            following.cancel()

    def _all_done(self) -> bool:
        """Every order final and no returned parcel still on its way back."""
        return (
            len(self.recorder.orders) == len(self.planned)
            and all(o.outcome in FINAL_OUTCOMES for o in self.recorder.orders.values())
            and not any(d.returning for d in self.drivers)
        )

    def _progress_line(self) -> str:
        counts = self.recorder.counts
        return (
            f"[sim {self.clock.label()}] orders {len(self.recorder.orders)}/{len(self.planned)}"
            f"  delivered {counts['deliveries']}  done {self.recorder.done_orders()}"
            f"  pings/s {self.recorder.pings_per_s():.1f}"
        )

    async def run(self) -> Recorder:
        """Play the scenario to the end (every order final, or the drain time is over)."""
        await self.setup()
        background = [asyncio.create_task(link.run()) for link in self.links]
        background += [asyncio.create_task(d.run()) for d in self.drivers]
        background += [asyncio.create_task(o.watch()) for o in self.origins]
        if self.desk is not None:
            background.append(asyncio.create_task(self.desk.run()))
        orders = [asyncio.create_task(self._order(i, p)) for i, p in enumerate(self.planned)]
        try:
            await self._watch(orders)
        finally:
            for task in orders:
                task.cancel()
            await asyncio.gather(*orders, return_exceptions=True)
            for link in self.links:
                await link.close()
            for task in background:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    self.recorder.note(f"a simulator task failed: {task.exception()!r}")
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        await self._reconcile()
        return self.recorder

    async def _watch(self, orders: list[asyncio.Task[None]]) -> None:
        """Progress lines until done; order tasks that failed are reported, not hidden."""
        last_placement = max((p.offset_s for p in self.planned), default=0.0)
        drain_deadline: float | None = None
        loop = asyncio.get_running_loop()
        while not self._all_done():
            if self.progress is not None:
                self.progress(self._progress_line())
            for task in orders:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    self.recorder.note(f"an order's actors failed: {task.exception()!r}")
                    self.recorder.counts["actor_errors"] += 1
            orders = [t for t in orders if not t.done()]
            if drain_deadline is None and self.clock.elapsed() >= last_placement:
                drain_deadline = loop.time() + self.scenario.drain_s
            if drain_deadline is not None and loop.time() > drain_deadline:
                self.recorder.note("drain time over: unfinished orders are reported as such")
                break
            await asyncio.sleep(PROGRESS_EVERY_S)
        if self.progress is not None:
            self.progress(self._progress_line())

    async def _reconcile(self) -> None:
        """The platform's last word on every order (its status is the truth)."""
        for order_id, record in self.recorder.orders.items():
            order = await self.world.get_order(order_id)
            if order.status == OrderStatus.FAILED:
                record.outcome = "failed"  # no policy followed (yet): still a failed delivery
            self.world.settle(order_id, order.status)
            if record.outcome == "unfinished":
                record.outcome = f"unfinished:{order.status.name.lower()}"
