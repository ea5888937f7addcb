"""A simulated origin (restaurant or store): registered through OriginService, accepts or
rejects each incoming order at its rejection rate, prepares it for a drawn time and says when
it is ready. Where the platform does not offer an origin call yet (UNIMPLEMENTED), the decision
still happens in the simulation, the report says the call was skipped, and a rejection is
carried out by the desk cancelling the order."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from lastmile_client.lastmile.common.v1 import Address
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.dispatch.v1 import CancelOrderRequest
from lastmile_client.lastmile.origin.v1 import (
    AcceptOrderRequest,
    MarkReadyRequest,
    Origin,
    OriginKind,
    RejectOrderRequest,
    UpsertOriginRequest,
)

from core.geo import LatLng
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.metrics import Recorder
from simulator.scenario import Origins


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
        self._cooking: set[asyncio.Task[None]] = set()

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
                    default_preparation=timedelta(seconds=self._config.prep_min_s),
                )
            )
        )

    async def _call(self, step: str, coroutine: object) -> bool:
        """Run an origin call; UNIMPLEMENTED is recorded as a skipped step."""
        try:
            await coroutine  # type: ignore[misc]
        except GRPCError as exc:
            if exc.status != Status.UNIMPLEMENTED:
                raise
            self._recorder.steps[step] = "skipped: the platform answers UNIMPLEMENTED"
            return False
        self._recorder.steps.setdefault(step, "done")
        return True

    async def decide(self, order_id: str) -> bool:
        """Accept (True) or reject an incoming order; accepted orders start cooking."""
        client = self._connection.origins(self.origin_id)
        if self._rng.random() < self._config.reject_rate:
            self._recorder.counts["origin_rejections"] += 1
            rejected = RejectOrderRequest(order_id=order_id, reason="kitchen too busy")
            if not await self._call("origin_reject", client.reject_order(rejected)):
                await self._connection.orders().cancel_order(
                    CancelOrderRequest(order_id=order_id, reason="origin rejected the order")
                )
            return False
        prep_s = self._rng.uniform(self._config.prep_min_s, self._config.prep_max_s)
        accepted = AcceptOrderRequest(
            order_id=order_id, preparation=timedelta(seconds=prep_s / self._clock.speed)
        )
        await self._call("origin_accept", client.accept_order(accepted))
        self._ready[order_id] = asyncio.Event()
        task = asyncio.create_task(self._cook(order_id, prep_s))
        self._cooking.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._cooking.discard)
        return True

    async def _cook(self, order_id: str, prep_s: float) -> None:
        await self._clock.sleep(prep_s)
        self._ready[order_id].set()
        client = self._connection.origins(self.origin_id)
        await self._call(
            "origin_mark_ready", client.mark_ready(MarkReadyRequest(order_id=order_id))
        )

    async def wait_ready(self, order_id: str) -> None:
        """Return once the order is ready (at once for orders this origin never cooked)."""
        event = self._ready.get(order_id)
        if event is not None:
            await event.wait()
