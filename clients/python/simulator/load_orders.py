"""Orders for load mode's customers, through the public API: each order is given to one of the
run's drivers (registered, CreateOrder from the start of the driver's road to a random door,
AssignOrder), and the driver reports arriving at the pickup and picking it up as soon as its
stream is open, so the order is on its way and its customers' ``Track`` streams carry the
driver's positions."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from lastmile.driver.v1 import driver_pb2
from lastmile_client.lastmile.dispatch.v1 import AssignOrderRequest, UpsertDriverRequest
from lastmile_client.lastmile.dispatch.v1 import Driver as DriverMessage

from core.geo import LatLng
from simulator.city import City
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.customer import Customer
from simulator.leftovers import order_ref
from simulator.metrics import Recorder
from simulator.scenario import Customers

# Order set-up calls in flight at once per load process.
SETUP_CONCURRENCY = 16
# Wall seconds of an order's drop-off window.
WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class LoadOrder:
    """An order of a load run: its driver, its tracking token, the pickup events to report."""

    driver_id: str
    tracking_token: str
    stops: tuple[driver_pb2.StopEvent, ...]


async def place_orders(
    connection: Connection,
    drivers: list[tuple[str, LatLng]],
    city: City,
    run_id: str,
    recorder: Recorder,
) -> list[LoadOrder]:
    """One order per ``(driver_id, pickup)``, created and assigned as the dispatch desk."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    rng = random.Random(run_id)
    doors = [city.random_place(rng) for _ in drivers]

    async def one(index: int) -> LoadOrder:
        driver_id, pickup = drivers[index]
        async with gate:
            return await _place(connection, driver_id, pickup, doors[index], run_id, recorder)

    return list(await asyncio.gather(*(one(i) for i in range(len(drivers)))))


async def _place(
    connection: Connection,
    driver_id: str,
    pickup: LatLng,
    door: LatLng,
    run_id: str,
    recorder: Recorder,
) -> LoadOrder:
    await connection.dispatch().upsert_driver(
        UpsertDriverRequest(
            driver=DriverMessage(
                driver_id=driver_id, name=f"Load {driver_id}", capacity_units=4, active=True
            )
        )
    )
    customer = Customer(
        door,
        Customers(),
        connection,
        SimClock(1.0),
        recorder,
        random.Random(driver_id),
        order_ref("load", run_id),
    )
    placed = await customer.place("", WINDOW_S, pickup=pickup)
    await connection.dispatch().assign_order(
        AssignOrderRequest(
            order_id=placed.order_id, driver_id=driver_id, reason="simulator load mode"
        )
    )
    recorder.counts["orders_assigned"] += 1
    kinds = (driver_pb2.STOP_EVENT_KIND_ARRIVED, driver_pb2.STOP_EVENT_KIND_PICKED_UP)
    stops = tuple(_stop(placed.order_id, kind, pickup) for kind in kinds)
    return LoadOrder(driver_id, placed.tracking_token, stops)


def _stop(order_id: str, kind: driver_pb2.StopEventKind, where: LatLng) -> driver_pb2.StopEvent:
    """A pickup event in the load drivers' message runtime (see :mod:`simulator.load_actors`)."""
    stop = driver_pb2.StopEvent(order_id=order_id, stop_id=f"{order_id}:pickup", kind=kind)
    stop.position.lat, stop.position.lng = where.lat, where.lng
    stop.at.GetCurrentTime()
    return stop
