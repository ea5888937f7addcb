"""A simulated customer: places one order (CreateOrder through the shop's desk), opens the
tracking stream a few times while waiting (recording the ETAs it is shown), sometimes changes
the delivery instructions, and is not home at the scenario's rate."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

import betterproto
from grpclib.exceptions import GRPCError, StreamTerminatedError
from lastmile_client.lastmile.common.v1 import (
    Address,
    DeliveryInstructions,
    DropOffPreference,
    TimeWindow,
)
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.dispatch.v1 import (
    CreateOrderRequest,
    Order,
    OrderKind,
    UpdateInstructionsRequest,
)
from lastmile_client.lastmile.tracking.v1 import TrackRequest

from core.geo import LatLng
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.metrics import OrderRecord, Recorder
from simulator.scenario import Customers

# How long (simulated seconds) a customer keeps the tracking page open.
TRACK_SESSION_S = (120.0, 600.0)


@dataclass(frozen=True, slots=True)
class Placed:
    """An order as its customer knows it."""

    order_id: str
    tracking_token: str


class Customer:
    """One customer with one order."""

    def __init__(
        self,
        home: LatLng,
        config: Customers,
        connection: Connection,
        clock: SimClock,
        recorder: Recorder,
        rng: random.Random,
        order_ref: str,
    ) -> None:
        self.home = home
        self._config = config
        self._connection = connection
        self._clock = clock
        self._recorder = recorder
        self._rng = rng
        self._order_ref = order_ref

    def is_home(self) -> bool:
        """Drawn per delivery attempt."""
        return self._rng.random() >= self._config.not_home_rate

    async def place(self, origin_id: str, window_s: float, pickup: LatLng | None = None) -> Placed:
        """CreateOrder: an instant order from ``origin_id`` (or a ``pickup`` point) to this
        customer's door."""
        pickup_address = None
        if pickup is not None:
            pickup_address = Address(
                line1="simulated pickup",
                country="MT",
                location=LatLngMessage(lat=pickup.lat, lng=pickup.lng),
            )
        response = await self._connection.orders().create_order(
            CreateOrderRequest(
                idempotency_key=f"{self._order_ref}-{uuid.UUID(int=self._rng.getrandbits(128))}",
                order=Order(
                    kind=OrderKind.INSTANT,
                    origin_id=origin_id,
                    pickup_address=pickup_address,
                    external_ref=self._order_ref,
                    drop_off_address=Address(
                        line1="simulated door",
                        country="MT",
                        location=LatLngMessage(lat=self.home.lat, lng=self.home.lng),
                    ),
                    drop_off_window=TimeWindow(
                        start=self._clock.wall_now(), end=self._clock.wall_in(window_s)
                    ),
                    size_units=1,
                    customer_name="Sim Customer",
                    customer_phone="+35621000000",
                ),
            )
        )
        self._recorder.counts["orders_created"] += 1
        return Placed(response.order.order_id, response.order.tracking_token)

    async def follow(self, record: OrderRecord) -> None:
        """Open tracking a few times and maybe change instructions, until the order ends."""
        opens = self._rng.randint(self._config.track_opens_min, self._config.track_opens_max)
        change = self._rng.random() < self._config.instruction_change_rate
        plans = [self._rng.uniform(0.0, 900.0) for _ in range(opens)]
        tasks = [asyncio.create_task(self._track_later(record, delay)) for delay in plans]
        if change:
            tasks.append(asyncio.create_task(self._change_later(record)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _track_later(self, record: OrderRecord, delay_s: float) -> None:
        await self._clock.sleep(delay_s)
        if record.outcome != "unfinished":
            return
        self._recorder.counts["track_opens"] += 1
        session_s = self._rng.uniform(*TRACK_SESSION_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(session_s / self._clock.speed):
                await self._track(record)

    async def _track(self, record: OrderRecord) -> None:
        """Read the Track stream; every ETA shown becomes a sample for the report."""
        try:
            stream = self._connection.tracking().track(
                TrackRequest(tracking_token=record.tracking_token)
            )
            async for update in stream:
                self._recorder.counts["track_messages"] += 1
                kind, found = betterproto.which_one_of(update, "update")
                value: Any = found
                eta = None
                if (kind == "snapshot" and value.eta) or (kind == "eta" and value.eta):
                    eta = value.eta
                if eta is not None and eta.year > 1970:
                    # The platform's ETA is road time from now, and road time is simulated
                    # time: drivers move at road speeds on the simulated clock.
                    remaining = (eta - self._clock.wall_now()).total_seconds()
                    now = self._clock.elapsed()
                    record.eta_samples.append((now, now + remaining))
        except (GRPCError, StreamTerminatedError) as exc:
            self._recorder.counts["track_errors"] += 1
            self._recorder.note(f"tracking stream ended with an error: {exc}")

    async def _change_later(self, record: OrderRecord) -> None:
        await self._clock.sleep(self._rng.uniform(60.0, 600.0))
        if record.outcome != "unfinished":
            return
        try:
            await self._connection.customer_orders().update_instructions(
                UpdateInstructionsRequest(
                    order_id=record.order_id,
                    tracking_token=record.tracking_token,
                    instructions=DeliveryInstructions(
                        text="Please ring twice, second floor",
                        preference=DropOffPreference.HAND_TO_CUSTOMER,
                    ),
                )
            )
            self._recorder.counts["instruction_changes"] += 1
        except GRPCError as exc:
            # Too late (picked up, final) is a normal answer for a slow customer.
            self._recorder.counts["instruction_changes_refused"] += 1
            self._recorder.note(f"instruction change refused: {exc.message}")
