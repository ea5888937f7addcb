"""A simulated origin (restaurant or store): registered through OriginService, it answers each
incoming order like a real one (scenario ``[origins] api = true``): it learns of the order on
its WatchOriginOrders stream, rejects it at its rejection rate (RejectOrder) or accepts it
with a preparation time drawn from the scenario's distribution (AcceptOrder), cooks, and says
when it is ready (MarkReady) before handing it to the driver.

With ``api = false`` it only cooks: the platform's answer policy answers for it, and a
rejection is the desk cancelling the order. A platform without an origin call
(UNIMPLEMENTED) gets the same treatment, and the report says the call was skipped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from lastmile_client.lastmile.common.v1 import Address
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.dispatch.v1 import CancelOrderRequest
from lastmile_client.lastmile.origin.v1 import (
    AcceptOrderRequest,
    MarkReadyRequest,
    Origin,
    OriginDecision,
    OriginKind,
    RejectOrderRequest,
    UpsertOriginRequest,
    WatchOriginOrdersRequest,
)

from core.geo import LatLng
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.metrics import Recorder
from simulator.scenario import Origins

# Wall seconds an origin waits for a placed order to show up on its stream before it answers
# anyway (and the report notes it).
SEEN_TIMEOUT_S = 30.0
# Wall seconds before the stream is opened again after it broke.
WATCH_RETRY_S = 1.0


class SimOrigin:
    """One origin actor."""

    def __init__(
        self,
        origin_id: str,
        location: LatLng,
        config: Origins,
        connection: Connection,
        clock: SimClock,
        recorder: Recorder,
        rng: random.Random,
    ) -> None:
        self.origin_id = origin_id
        self.location = location
        self._config = config
        self._connection = connection
        self._clock = clock
        self._recorder = recorder
        self._rng = rng
        self._ready: dict[str, asyncio.Event] = {}
        self._seen: dict[str, asyncio.Event] = {}
        self._cooking: set[asyncio.Task[None]] = set()
        self._cursor = ""
        self._api = config.api

    async def register(self) -> None:
        """UpsertOrigin as the operator's desk."""
        await self._connection.origins().upsert_origin(
            UpsertOriginRequest(
                origin=Origin(
                    origin_id=self.origin_id,
                    name=f"Simulated kitchen {self.origin_id}",
                    kind=OriginKind.RESTAURANT,
                    address=Address(
                        line1="simulated",
                        country="MT",
                        location=LatLngMessage(lat=self.location.lat, lng=self.location.lng),
                    ),
                    # Wall time, as the platform counts it (see the package docstring).
                    default_preparation=timedelta(
                        seconds=self._config.prep_min_s / self._clock.speed
                    ),
                )
            )
        )

    def draw_preparation(self) -> float:
        """Simulated seconds of preparation for one order (the scenario's distribution)."""
        low, high = self._config.prep_min_s, self._config.prep_max_s
        if self._config.prep_distribution == "triangular":
            mode = self._config.prep_mode_s or (low + high) / 2
            return self._rng.triangular(low, high, mode)
        return self._rng.uniform(low, high)

    async def watch(self) -> None:
        """Follow the origin's WatchOriginOrders stream (``api`` on; runs until cancelled):
        each new order (PENDING with this origin) is noted as seen, so :meth:`decide` answers
        orders as a real origin learns of them. Reopens from the last cursor when it breaks."""
        if not self._api:
            return
        while True:
            request = WatchOriginOrdersRequest(origin_id=self.origin_id, after_cursor=self._cursor)
            try:
                client = self._connection.origins(self.origin_id)
                async for response in client.watch_origin_orders(request):
                    self._on_message(response.order)
            except GRPCError as exc:
                if exc.status == Status.UNIMPLEMENTED:
                    self._unavailable("origin_watch")
                    return
                self._recorder.note(f"an origin's order stream failed: {exc.status.name}")
            except (OSError, StreamTerminatedError) as exc:
                self._recorder.note(f"an origin's order stream broke: {exc!r}")
            await asyncio.sleep(WATCH_RETRY_S)

    def _on_message(self, order: Any) -> None:
        self._cursor = order.cursor or self._cursor
        self._recorder.steps.setdefault("origin_watch", "done")
        if order.origin_id != self.origin_id or order.decision != OriginDecision.PENDING:
            return
        seen = self._seen.setdefault(order.order_id, asyncio.Event())
        if not seen.is_set():
            self._recorder.counts["origin_orders_seen"] += 1
            seen.set()

    def _unavailable(self, step: str) -> None:
        """The platform lacks origin calls: decide in the simulation only from now on."""
        self._recorder.steps[step] = "skipped: the platform answers UNIMPLEMENTED"
        self._api = False
        for seen in self._seen.values():
            seen.set()

    async def _wait_seen(self, order_id: str) -> None:
        seen = self._seen.setdefault(order_id, asyncio.Event())
        try:
            async with asyncio.timeout(SEEN_TIMEOUT_S):
                await seen.wait()
        except TimeoutError:
            self._recorder.note("an order did not reach its origin's stream in time")

    async def _call(self, step: str, call: Awaitable[Any]) -> bool:
        """Run an origin call; False when the platform lacks it (UNIMPLEMENTED, recorded as a
        skipped step) or refuses it in the order's state (FAILED_PRECONDITION, counted)."""
        try:
            await call
        except GRPCError as exc:
            if exc.status == Status.UNIMPLEMENTED:
                self._unavailable(step)
                return False
            if exc.status != Status.FAILED_PRECONDITION:
                raise
            self._recorder.counts[f"{step}_refused"] += 1
            self._recorder.note(f"{step} refused: {exc.message}")
            return False
        self._recorder.steps.setdefault(step, "done")
        return True

    async def decide(self, order_id: str) -> bool:
        """Accept (True) or reject an incoming order; accepted orders start cooking."""
        if self._api:
            await self._wait_seen(order_id)
        client = self._connection.origins(self.origin_id)
        if self._rng.random() < self._config.reject_rate:
            rejected = RejectOrderRequest(order_id=order_id, reason="kitchen too busy")
            if self._api and await self._call("origin_reject", client.reject_order(rejected)):
                self._recorder.counts["origin_rejections"] += 1
                return False
            if not self._api:
                self._recorder.counts["origin_rejections"] += 1
                await self._connection.orders().cancel_order(
                    CancelOrderRequest(order_id=order_id, reason="origin rejected the order")
                )
                return False
            # Refused: the answer policy accepted it first; the kitchen cooks it after all.
        prep_s = self.draw_preparation()
        if self._api:
            accepted = AcceptOrderRequest(
                order_id=order_id, preparation=timedelta(seconds=prep_s / self._clock.speed)
            )
            await self._call("origin_accept", client.accept_order(accepted))
        self._recorder.counts["origin_accepts"] += 1
        self._ready[order_id] = asyncio.Event()
        task = asyncio.create_task(self._cook(order_id, prep_s))
        self._cooking.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._cooking.discard)
        return True

    async def _cook(self, order_id: str, prep_s: float) -> None:
        await self._clock.sleep(prep_s)
        try:
            if self._api:
                # Told before the food is handed over: the platform hears of it first.
                client = self._connection.origins(self.origin_id)
                ready = MarkReadyRequest(order_id=order_id)
                if await self._call("origin_mark_ready", client.mark_ready(ready)):
                    self._recorder.counts["origin_ready"] += 1
        finally:
            self._ready[order_id].set()  # the food is ready whatever the platform answered

    async def wait_ready(self, order_id: str) -> None:
        """Return once the order is ready (at once for orders this origin never cooked)."""
        event = self._ready.get(order_id)
        if event is not None:
            await event.wait()
