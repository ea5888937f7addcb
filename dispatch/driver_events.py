"""Driver and geofence events applied to orders (a consumer group on the bus).

- StopEvent ARRIVED at a pickup stop -> AT_PICKUP; at a drop-off stop -> NEARBY;
  PICKED_UP -> PICKED_UP (skipped steps such as TO_PICKUP are recorded on the way);
  DEPARTED -> the route stop completed (so are the stops an order's progress leaves behind).
- Geofence ENTER of a PICKUP fence -> AT_PICKUP (when TO_PICKUP); of a NEARBY or DROP_OFF
  fence -> NEARBY (when PICKED_UP).
- FailedAttempt -> the failed-attempt use case (dispatch.failures).
- OfferAnswer -> :func:`on_offer_answer`, the hook the instant matcher fills in.
- RouteAck -> the acknowledged version recorded (dispatch.route_acks).
- An off-route event from tracking (OFF_ROUTE_EVENTS) -> the route recomputed from the
  driver's position and pushed (dispatch.off_route).
- A confirmed proof (PROOF_EVENTS, written by pod through the outbox) -> DELIVERED.

Replays are harmless: a report the order is already past is skipped, and each driver event
is recorded with a dedupe key (driver + sequence number) so it applies once. Refusals,
outages and entries left pending are handled as for every consumer group
(``core.stream_consumer``): a domain refusal (illegal transition) is logged and acked, an
outage stops the round until the dependency answers, and a dead replica's entries are claimed
once idle for ``order_consumer_claim_idle_ms``.
"""

from __future__ import annotations

import logging
import os

from lastmile.common.v1 import route_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.tracking.v1 import tracking_pb2

from core import topics
from core.bus import StreamEntry
from core.stream_consumer import GroupConsumer
from dispatch import failures, off_route, offers, progress, route_acks, route_store
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.order_store import Actor
from dispatch.proof_events import apply_proof_event

log = logging.getLogger(__name__)
GROUP = "dispatch-orders"
STREAMS = (
    topics.DRIVER_EVENTS,
    topics.GEOFENCE_EVENTS,
    topics.PROOF_EVENTS,
    topics.OFF_ROUTE_EVENTS,
)


async def on_offer_answer(
    ctx: DispatchContext, driver_id: str, answer: driver_pb2.OfferAnswer
) -> None:
    """An answer to an offer: accept assigns, reject re-offers (dispatch.offers)."""
    await offers.answer_offer(ctx, driver_id, answer)


class DriverEventConsumer(GroupConsumer):
    """Background component of the dispatch process: see the module docstring."""

    name = "driver-events"

    def __init__(self, ctx: DispatchContext) -> None:
        settings = ctx.settings
        super().__init__(
            ctx.bus,
            STREAMS,
            GROUP,
            f"dispatch-{os.getpid()}",
            block_ms=settings.order_consumer_block_ms,
            claim_idle_ms=settings.order_consumer_claim_idle_ms,
            retry_s=settings.outbox_poll_interval_s,
        )
        self._ctx = ctx

    async def handle(self, entry: StreamEntry) -> None:
        """Apply one entry of any of the consumed streams."""
        if entry.stream == topics.PROOF_EVENTS:
            await apply_proof_event(self._ctx, entry.fields[b"data"])
            return
        if entry.stream == topics.GEOFENCE_EVENTS:
            event = tracking_pb2.GeofenceEvent.FromString(entry.fields[b"data"])
            await self._geofence(event)
            return
        if entry.stream == topics.OFF_ROUTE_EVENTS:
            await off_route.reroute(
                self._ctx, tracking_pb2.OffRouteEvent.FromString(entry.fields[b"data"])
            )
            return
        driver_id = entry.fields[b"driver"].decode()
        seq = entry.fields.get(b"seq", b"").decode()
        request = driver_service_pb2.ConnectRequest.FromString(entry.fields[b"data"])
        dedupe = f"driver:{driver_id}:{seq}" if seq else ""
        kind = request.WhichOneof("event")
        if kind == "stop":
            await self._stop(driver_id, request.stop, dedupe)
        elif kind == "failed_attempt":
            await self._failed(driver_id, request.failed_attempt, dedupe)
        elif kind == "offer_answer":
            await on_offer_answer(self._ctx, driver_id, request.offer_answer)
        elif kind == "route_ack":
            await route_acks.record_ack(self._ctx, driver_id, request.route_ack)

    async def _stop(self, driver_id: str, stop: driver_pb2.StopEvent, dedupe: str) -> None:
        actor = Actor(f"driver:{driver_id}")
        if stop.kind == driver_pb2.STOP_EVENT_KIND_PICKED_UP:
            target = sm.PICKED_UP
        elif stop.kind == driver_pb2.STOP_EVENT_KIND_ARRIVED:
            target = sm.NEARBY if await self._is_drop_off(stop) else sm.AT_PICKUP
        elif stop.kind == driver_pb2.STOP_EVENT_KIND_DEPARTED:
            # The stop is behind the driver (Stop.completed in later versions).
            async with self._ctx.database.pool.acquire() as conn:
                await route_store.complete_stop(conn, stop.stop_id, driver_id)
            return
        else:  # the gateway refuses other kinds; an event queued before it did changes nothing
            log.warning("stop event of unknown kind", extra={"kind": stop.kind})
            return
        details = {"stop_id": stop.stop_id}
        if stop.HasField("at"):  # when the driver acted: the app may have been offline
            details["reported_at"] = stop.at.ToJsonString()
        await progress.advance(
            self._ctx,
            stop.order_id,
            target,
            actor,
            driver_id=driver_id,
            dedupe=dedupe,
            details=details,
        )

    async def _is_drop_off(self, stop: driver_pb2.StopEvent) -> bool:
        """The stop's kind from the route when known, else from the order's progress."""
        async with self._ctx.database.pool.acquire() as conn:
            kind = await conn.fetchval(
                "SELECT kind FROM route_stops WHERE stop_id = $1", stop.stop_id
            )
            if kind is not None:
                return bool(kind == route_pb2.STOP_KIND_DROP_OFF)
            status = await conn.fetchval(
                "SELECT status FROM orders WHERE order_id = $1", stop.order_id
            )
        return status in (sm.PICKED_UP, sm.NEARBY)

    async def _failed(self, driver_id: str, attempt: driver_pb2.FailedAttempt, dedupe: str) -> None:
        async with self._ctx.database.pool.acquire() as conn:
            owner = await conn.fetchval(
                "SELECT driver_id FROM orders WHERE order_id = $1", attempt.order_id
            )
        if owner != driver_id:
            return
        report = failures.Attempt(
            order_id=attempt.order_id,
            reason=attempt.reason,
            note=attempt.note,
            photo_key=attempt.photo_key,
            lat=attempt.position.lat if attempt.HasField("position") else None,
            lng=attempt.position.lng if attempt.HasField("position") else None,
            dedupe=dedupe,
            reported_at=attempt.at.ToJsonString() if attempt.HasField("at") else "",
        )
        await failures.report_failed_attempt(self._ctx, None, report, Actor(f"driver:{driver_id}"))

    async def _geofence(self, event: tracking_pb2.GeofenceEvent) -> None:
        if event.kind != tracking_pb2.GEOFENCE_EVENT_KIND_ENTER or not event.order_id:
            return
        async with self._ctx.database.pool.acquire() as conn:
            purpose = await conn.fetchval(
                "SELECT purpose FROM geofences WHERE geofence_id = $1", event.geofence_id
            )
        actor = Actor(f"driver:{event.driver_id}")
        details = {"geofence_id": event.geofence_id}
        if purpose == tracking_pb2.GEOFENCE_PURPOSE_PICKUP:
            await progress.advance(
                self._ctx,
                event.order_id,
                sm.AT_PICKUP,
                actor,
                only_from=frozenset({sm.TO_PICKUP}),
                details=details,
            )
        elif purpose in (
            tracking_pb2.GEOFENCE_PURPOSE_NEARBY,
            tracking_pb2.GEOFENCE_PURPOSE_DROP_OFF,
        ):
            await progress.advance(
                self._ctx,
                event.order_id,
                sm.NEARBY,
                actor,
                only_from=frozenset({sm.PICKED_UP}),
                details=details,
            )
