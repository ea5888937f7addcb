"""The simulated city's shared facts that actors ask each other about (is the food ready, is
the customer home) and the platform's view of an order (read with GetOrder as the desk)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lastmile_client.lastmile.common.v1 import OrderStatus
from lastmile_client.lastmile.dispatch.v1 import GetOrderRequest, Order

from core.geo import LatLng
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.customer import Customer
from simulator.metrics import Recorder
from simulator.origin import SimOrigin

# Wall seconds the platform gets to apply an event before the simulator stops waiting.
APPLY_TIMEOUT_S = 30.0
POLL_S = 0.2

#: Platform statuses and the outcome the report counts them as. RESCHEDULED after a failed
#: attempt is a failed delivery (moved to another day).
OUTCOME_OF = {
    OrderStatus.DELIVERED: "delivered",
    OrderStatus.FAILED: "failed",
    OrderStatus.RESCHEDULED: "failed",
    OrderStatus.RETURNED: "returned",
    OrderStatus.CANCELLED: "cancelled",
}


class World:
    """Implements :class:`simulator.driver.World` for one run."""

    def __init__(self, connection: Connection, clock: SimClock, recorder: Recorder) -> None:
        self._connection = connection
        self._clock = clock
        self._recorder = recorder
        self.origin_of: dict[str, SimOrigin] = {}
        self.customer_of: dict[str, Customer] = {}
        # Pickup points of returned orders, from the platform's view when it returned them.
        self._return_points: dict[str, LatLng] = {}

    async def get_order(self, order_id: str) -> Order:
        """The platform's current view of an order."""
        response = await self._connection.orders().get_order(GetOrderRequest(order_id=order_id))
        return response.order

    async def wait_for(self, order_id: str, done: Callable[[Order], bool]) -> Order:
        """Poll until ``done(order)`` or the timeout passes; returns the last view."""
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while True:
            order = await self.get_order(order_id)
            if done(order):
                return order
            if time.monotonic() > deadline:
                return order
            await asyncio.sleep(POLL_S)

    async def wait_ready(self, order_id: str) -> None:
        """The origin has the order ready."""
        origin = self.origin_of.get(order_id)
        if origin is not None:
            await origin.wait_ready(order_id)

    def customer_home(self, order_id: str) -> bool:
        """Drawn per attempt by the customer."""
        customer = self.customer_of.get(order_id)
        return customer.is_home() if customer is not None else True

    def proofs_available(self) -> bool:
        """False once the platform has said it cannot confirm proofs."""
        return not self._recorder.steps.get("proofs", "").startswith("skipped")

    async def delivered(self, order_id: str, driver_id: str, proof_id: str) -> None:
        """Wait for the platform to record the delivery, then count it."""
        record = self._recorder.orders.get(order_id)
        order = await self.wait_for(order_id, lambda o: o.status == OrderStatus.DELIVERED)
        self.settle(order_id, order.status)
        if record is None:  # an earlier run's order, finished by this run's driver
            if order.status == OrderStatus.DELIVERED:
                self._recorder.counts["leftovers_delivered"] += 1
        elif record.outcome == "delivered":
            record.delivered_s = self._clock.elapsed()
            self._recorder.counts["deliveries"] += 1
        elif not proof_id:
            self._recorder.note("a hand-over without a confirmed proof is not a delivery")

    async def attempt_of(self, order_id: str) -> int:
        """The platform's attempt counter of an order (read before reporting a failure)."""
        return int((await self.get_order(order_id)).attempt)

    async def after_failure(self, order_id: str, reason: str, before: int) -> str:
        """The policy the platform applied to a failed attempt reported when the attempt
        counter was ``before``: reattempt, returned, rescheduled, or unknown (no answer in
        time)."""
        if order_id in self._recorder.orders:
            self._recorder.orders[order_id].failures.append(reason)
        order = await self.wait_for(
            order_id,
            lambda o: (
                (o.status == OrderStatus.PICKED_UP and o.attempt > before)
                or o.status in (OrderStatus.RETURNED, OrderStatus.RESCHEDULED)
            ),
        )
        if order.status == OrderStatus.PICKED_UP and order.attempt > before:
            return "reattempt"
        if order.status in (OrderStatus.RETURNED, OrderStatus.RESCHEDULED):
            self.settle(order_id, order.status)
            if order.status == OrderStatus.RESCHEDULED:
                return "rescheduled"
            where = order.pickup_address.location
            if where is not None and (where.lat or where.lng):
                self._return_points[order_id] = LatLng(where.lat, where.lng)
            return "returned"
        return "unknown"

    def return_point(self, order_id: str) -> LatLng | None:
        """Where a returned order goes back to: its pickup point as GetOrder showed it."""
        return self._return_points.get(order_id)

    def settle(self, order_id: str, status: OrderStatus) -> None:
        """Record the outcome of an order whose platform status is final (for the report)."""
        outcome = OUTCOME_OF.get(status)
        # FAILED is passing: the reason's policy moves the order on at once.
        record = self._recorder.orders.get(order_id)
        if record is not None and outcome is not None and status != OrderStatus.FAILED:
            record.outcome = outcome
