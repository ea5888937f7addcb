"""A simulated driver: holds its Connect stream, drives OSRM routes at the road's speeds with
its own variation, records GPS, answers offers, works through its stops (pickup: arrive, wait
for the food, pick up; drop-off: arrive, hand over with a photo proof or report a failed
attempt) and follows route updates from the platform."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any, Protocol

import betterproto
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from lastmile_client.lastmile.common.v1 import DriverStatus, FailureReason
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.driver.v1 import (
    FailedAttempt,
    OfferAnswer,
    RouteAck,
    StatusChange,
    StopEvent,
    StopEventKind,
    TrackingMode,
)
from lastmile_client.lastmile.pod.v1 import ProofOfDeliveryServiceStub

from core.geo import LatLng, haversine_m
from simulator.city import City
from simulator.clock import SimClock
from simulator.driver_link import DriverLink, fix_message, interval_s
from simulator.gps import GpsNoise, RoutePath
from simulator.metrics import Recorder
from simulator.proofs import deliver_with_photo

# Simulated seconds a driver's motion advances per step (the position the GPS reads).
MOVE_STEP_S = 2.0
SERVICE_TIME_S = (60.0, 180.0)


@dataclass
class Stop:
    """One place the driver has to be: a pickup or a drop-off of an order."""

    order_id: str
    kind: str  # "pickup" | "drop_off" | "return" (a returned parcel back to its pickup)
    location: LatLng
    stop_id: str


class World(Protocol):
    """What a driver learns from the rest of the simulated city."""

    async def wait_ready(self, order_id: str) -> None:
        """Return when the origin has the order ready."""

    def customer_home(self, order_id: str) -> bool:
        """Whether the customer opens the door for this attempt."""

    async def delivered(self, order_id: str, driver_id: str, proof_id: str) -> None:
        """The hand-over happened and the proof was confirmed."""

    async def attempt_of(self, order_id: str) -> int:
        """The platform's attempt counter of the order."""

    async def after_failure(self, order_id: str, reason: str, before: int) -> str:
        """What the platform decided after a failed attempt: reattempt, returned, ..."""

    def return_point(self, order_id: str) -> LatLng | None:
        """Where a returned order goes back to (its pickup point, as the platform has it)."""

    def proofs_available(self) -> bool:
        """Whether the platform confirms proofs (else the step is skipped and reported)."""


class Driver:
    """One driver actor."""

    def __init__(
        self,
        driver_id: str,
        home: LatLng,
        city: City,
        clock: SimClock,
        link: DriverLink,
        pod: ProofOfDeliveryServiceStub,
        world: World,
        recorder: Recorder,
        rng: random.Random,
        noise: GpsNoise,
        offer_accept_rate: float,
        speed_variation: float,
        reattempt_wait_s: float,
    ) -> None:
        self.driver_id = driver_id
        self.position = home
        self.heading = 0.0
        self.speed_mps = 0.0
        self.stops: list[Stop] = []
        self._city, self._clock, self._link, self._pod = city, clock, link, pod
        self._world, self._recorder, self._rng, self._noise = world, recorder, rng, noise
        self._accept_rate = offer_accept_rate
        self._variation = speed_variation
        self._reattempt_wait_s = reattempt_wait_s
        self._factor = 1.0 + rng.uniform(-speed_variation, speed_variation)
        self._work = asyncio.Event()
        self._fixes: list[Any] = []
        self._offers: dict[str, tuple[str, ...]] = {}

    @property
    def idle(self) -> bool:
        """No stops left."""
        return not self.stops

    @property
    def returning(self) -> bool:
        """A returned parcel is still on board."""
        return any(s.kind == "return" for s in self.stops)

    def assign(self, order_id: str, pickup: LatLng, drop_off: LatLng) -> None:
        """Take an order (baseline policy: the desk tells the driver directly)."""
        if any(s.order_id == order_id for s in self.stops):
            return
        self.stops.append(Stop(order_id, "pickup", pickup, f"{order_id}:pickup"))
        self.stops.append(Stop(order_id, "drop_off", drop_off, f"{order_id}:drop_off"))
        self._work.set()

    # --- commands from the platform ------------------------------------------------------

    async def on_command(self, kind: str, value: Any) -> None:
        """Offers, route updates, cancellations, instruction changes."""
        if kind == "offer":
            accepted = self._rng.random() < self._accept_rate
            self._recorder.counts["offers_accepted" if accepted else "offers_declined"] += 1
            self._link.send(
                offer_answer=OfferAnswer(
                    offer_id=value.offer_id,
                    accepted=accepted,
                    reject_reason="" if accepted else "too far",
                )
            )
            if accepted:
                self._take_offer(value)
        elif kind == "offer_withdrawn":
            # Accepted too late: the platform gave the orders to someone else.
            withdrawn = self._offers.pop(value.offer_id, ())
            self.stops = [s for s in self.stops if s.order_id not in withdrawn]
            self._recorder.counts["offers_withdrawn"] += 1
        elif kind == "route_update":
            self._apply_route(value.route)
        elif kind == "welcome" and betterproto.serialized_on_wire(value.route):
            # A version pushed while the stream was down: Welcome carries it until acked.
            self._apply_route(value.route)
        elif kind == "order_cancelled":
            self.stops = [s for s in self.stops if s.order_id != value.order_id]
            self._recorder.counts["orders_cancelled_on_route"] += 1
        elif kind == "instruction_change":
            self._recorder.counts["instruction_changes_received"] += 1

    def _apply_route(self, route: Any) -> None:
        """The route's uncompleted stops replace the plan (the current target stays first
        because the platform keeps it first)."""
        stops = []
        for stop in route.stops:
            if stop.completed or stop.kind.value not in (1, 2):  # PICKUP, DROP_OFF
                continue
            kind = "pickup" if stop.kind.value == 1 else "drop_off"
            where = LatLng(stop.location.lat, stop.location.lng)
            stops.append(Stop(stop.order_id, kind, where, stop.stop_id))
        # The platform plans no return trips: the driver keeps its own.
        self.stops = [s for s in self.stops if s.kind == "return"] + stops
        self._recorder.counts["route_updates"] += 1
        self._link.send(route_ack=RouteAck(route_id=route.route_id, version=route.version))
        self._work.set()

    def _take_offer(self, offer: Any) -> None:
        """Plan an accepted offer as the driver app shows it: its pickups in the offered
        order, then its drop-offs nearest first."""
        orders = [o for o in offer.orders if not any(s.order_id == o.order_id for s in self.stops)]
        self._offers[offer.offer_id] = tuple(o.order_id for o in orders)
        if not orders:
            return
        for o in orders:
            where = LatLng(o.pickup.lat, o.pickup.lng)
            self.stops.append(Stop(o.order_id, "pickup", where, f"{o.order_id}:pickup"))
        here = self.stops[-1].location
        left = [(o.order_id, LatLng(o.drop_off.lat, o.drop_off.lng)) for o in orders]
        while left:
            order_id, where = min(left, key=lambda item: haversine_m(here, item[1]))
            left.remove((order_id, where))
            self.stops.append(Stop(order_id, "drop_off", where, f"{order_id}:drop_off"))
            here = where
        self._work.set()

    # --- main loops ------------------------------------------------------------------------

    async def run(self) -> None:
        """Work through stops as they come; record GPS all along."""
        recorder = asyncio.create_task(self._gps_loop())
        try:
            self._status(DriverStatus.IDLE)
            while True:
                if not self.stops:
                    self._work.clear()
                    self.speed_mps = 0.0
                    await self._work.wait()
                stop = self.stops[0]
                try:
                    await self._serve(stop)
                except (GRPCError, OSError, ValueError, KeyError) as exc:
                    # One broken stop must not stop the driver: report it and move on.
                    self._recorder.counts["driver_errors"] += 1
                    self._recorder.note(f"driver {self.driver_id} gave up a stop: {exc!r}")
                    self._finish(stop)
        finally:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def _serve(self, stop: Stop) -> None:
        started = self._clock.elapsed()
        self._status(DriverStatus.TO_PICKUP if stop.kind == "pickup" else DriverStatus.DELIVERING)
        path = self._city.path(self.position, stop.location)
        await self._drive(path)
        if stop.kind == "pickup":
            await self._pickup(stop)
        elif stop.kind == "return":
            await self._hand_back(stop, path.length_m)
        else:
            await self._drop_off(stop)
        self._recorder.driver(self.driver_id).busy_s += self._clock.elapsed() - started
        if not self.stops:
            self._status(DriverStatus.IDLE)

    async def _drive(self, path: RoutePath) -> None:
        """Advance along ``path`` in simulated-time steps at road speed x this driver's and
        this leg's variation."""
        leg_factor = self._factor * (1.0 + self._rng.uniform(-0.5, 0.5) * self._variation)
        done = 0.0
        while done < path.length_m:
            self.speed_mps = path.speed_at(done) * leg_factor
            step = min(path.length_m - done, self.speed_mps * MOVE_STEP_S)
            done += step
            self.position, self.heading = path.position_at(done)
            self._recorder.driver(self.driver_id).distance_m += step
            await self._clock.sleep(step / self.speed_mps)
        self.speed_mps = 0.0

    def _stop_event(self, stop: Stop, kind: StopEventKind) -> None:
        self._link.send(
            stop=StopEvent(
                order_id=stop.order_id,
                stop_id=stop.stop_id,
                kind=kind,
                at=self._clock.wall_now(),
                position=LatLngMessage(lat=self.position.lat, lng=self.position.lng),
            )
        )

    async def _pickup(self, stop: Stop) -> None:
        self._stop_event(stop, StopEventKind.ARRIVED)
        self._status(DriverStatus.AT_PICKUP)
        await self._world.wait_ready(stop.order_id)
        await self._clock.sleep(self._rng.uniform(30.0, 90.0))
        self._stop_event(stop, StopEventKind.PICKED_UP)
        self._stop_event(stop, StopEventKind.DEPARTED)
        self._finish(stop)

    async def _drop_off(self, stop: Stop) -> None:
        self._stop_event(stop, StopEventKind.ARRIVED)
        record = self._recorder.orders.get(stop.order_id)
        if record is not None:  # none for an order an earlier run left on this driver
            record.arrived_s = self._clock.elapsed()
        await self._clock.sleep(self._rng.uniform(*SERVICE_TIME_S))
        if self._world.customer_home(stop.order_id):
            await self._hand_over(stop)
            return
        before = await self._world.attempt_of(stop.order_id)
        self._link.send(
            failed_attempt=FailedAttempt(
                order_id=stop.order_id,
                reason=FailureReason.NOT_HOME,
                note="nobody answered the door",
                position=LatLngMessage(lat=self.position.lat, lng=self.position.lng),
                at=self._clock.wall_now(),
            )
        )
        decision = await self._world.after_failure(stop.order_id, "NOT_HOME", before)
        self._finish(stop)
        if decision == "reattempt":
            # Come back later: the stop goes to the end of the plan.
            await self._clock.sleep(self._reattempt_wait_s)
            self.stops.append(stop)
        elif decision == "returned":
            self._plan_return(stop.order_id)

    def _plan_return(self, order_id: str) -> None:
        """The platform returned the order to its origin: the parcel goes back there next.
        (No await before the stop is planned: the run must not end with the parcel on board.)"""
        origin = self._world.return_point(order_id)
        if origin is None:
            self._recorder.note("a returned order without a pickup point was not driven back")
            return
        self.stops.insert(0, Stop(order_id, "return", origin, f"{order_id}:return"))

    async def _hand_back(self, stop: Stop, driven_m: float) -> None:
        """At the origin with a returned parcel: hand it back (the platform has nothing more
        to hear: the order is already RETURNED)."""
        await self._clock.sleep(self._rng.uniform(30.0, 90.0))
        self._recorder.counts["return_trips"] += 1
        self._recorder.driver(self.driver_id).return_m += driven_m
        self._finish(stop)

    async def _hand_over(self, stop: Stop) -> None:
        proof_id = ""
        if self._world.proofs_available():
            try:
                proof_id = await deliver_with_photo(
                    self._pod, stop.order_id, self.position, self._rng
                )
                self._recorder.counts["proofs_confirmed"] += 1
            except GRPCError as exc:
                if exc.status == Status.UNIMPLEMENTED:
                    self._recorder.steps["proofs"] = "skipped: the platform answers UNIMPLEMENTED"
                self._recorder.counts["proofs_failed"] += 1
                self._recorder.note(f"proof of delivery failed: {exc.status.name} {exc.message}")
            except OSError as exc:  # the upload to object storage; recorded, not hidden
                self._recorder.counts["proofs_failed"] += 1
                self._recorder.note(f"proof of delivery failed: {exc}")
        self._stop_event(stop, StopEventKind.DEPARTED)
        self._finish(stop)
        await self._world.delivered(stop.order_id, self.driver_id, proof_id)

    def _finish(self, stop: Stop) -> None:
        """Drop the stop, matched by order and kind: a route update may have replaced the
        plan (and its stop ids) while the driver was at it."""
        self.stops = [s for s in self.stops if (s.order_id, s.kind) != (stop.order_id, stop.kind)]

    def _status(self, status: DriverStatus) -> None:
        self._link.send(status=StatusChange(status=status, at=self._clock.wall_now()))
        if status == DriverStatus.IDLE and self._link.connected.is_set():
            # As a phone app does on a status change: send where it is now, so that
            # dispatch sees an idle driver where it is, not where it last uploaded.
            fix = self._noise.observe(self.position, 0.0, self.heading)
            self._link.send_fixes([*self._fixes, fix_message(fix, self._clock.wall_now())])
            self._fixes = []

    async def _gps_loop(self) -> None:
        """Capture at the config's capture interval, upload at its upload interval (both
        wall-clock timers, as on a phone)."""
        loop = asyncio.get_running_loop()
        last_capture = last_upload = float("-inf")
        while True:
            # Intervals come from the config in force now: a new config applies at once.
            config = self._link.config
            active = config.mode == TrackingMode.ACTIVE
            capture = interval_s(config.capture_interval, 1.0 if active else 30.0)
            upload = interval_s(config.upload_interval, 5.0 if active else 120.0)
            now = loop.time()
            if now >= last_capture + capture:
                fix = self._noise.observe(self.position, self.speed_mps, self.heading)
                self._fixes.append(fix_message(fix, self._clock.wall_now()))
                last_capture = now
            if now >= last_upload + upload and self._link.connected.is_set():
                self._link.send_fixes(self._fixes)
                self._fixes = []
                last_upload = now
            wake = min(last_capture + capture, last_upload + upload)
            # At most a second: a config pushed meanwhile takes effect within it.
            await asyncio.sleep(min(1.0, max(0.02, wake - loop.time())))
