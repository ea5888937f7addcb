"""Off-route detection on every processed batch (a processor PositionObserver).

Where the route comes from: dispatch mirrors every version it pushes to a driver in Redis
(:mod:`core.route_plans`), legs and all, so tracking needs neither dispatch's tables nor an
RPC: per batch it reads each driver's small header (route id, version) in one pipelined round
trip, and the serialized route only when the version changed since this
process last parsed it (kept parsed, at most ``off_route_cached_plans`` drivers).

Each fix of the batch (oldest first, snapped when snapping succeeded) steps the driver's state
through :mod:`tracking.off_route_plan`. The state lives in Redis (one hash per driver,
:func:`state_key`) so any processor process continues where another stopped. An episode off
the route that lasts ``off_route_after_s`` publishes one OffRouteEvent on
``core.topics.OFF_ROUTE_EVENTS`` (before the state is written: a crash repeats an event rather
than losing it; dispatch ignores an event for a version that is no longer current). Dispatch
answers with a recomputed version; it resets the state, so the driver is checked against the
new geometry from then on. Drivers offline or on a break are not checked.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2, route_pb2
from lastmile.tracking.v1 import tracking_pb2

from core import route_plans, topics
from core.bus import Bus
from core.settings import Settings
from tracking.off_route_plan import Guidance, Limits, OffRoute, Plan, plan_of, step
from tracking.positions import PositionUpdate

log = logging.getLogger(__name__)
#: Statuses in which a driver is not expected to follow its route.
NOT_DRIVING = frozenset({common_pb2.DRIVER_STATUS_OFFLINE, common_pb2.DRIVER_STATUS_ON_BREAK})
#: How long a driver's state outlives its last update (routes last a working day).
STATE_TTL_S = 24 * 3600


def state_key(driver_id: str) -> str:
    """One driver's off-route state (hash of :meth:`Guidance.encode`)."""
    return f"lastmile:driver:{driver_id}:off-route"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class OffRouteObserver:
    """Turns positions into off-route events; see the module docstring."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self._settings = settings
        self._bus = bus
        self._limits = Limits(
            off_m=settings.off_route_distance_m,
            rejoin_m=min(settings.off_route_rejoin_m, settings.off_route_distance_m),
            after_ms=round(settings.off_route_after_s * 1000),
        )
        self._plans: OrderedDict[str, Plan] = OrderedDict()

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        """Step every driver of the batch that has a route; publish finished episodes."""
        driving = [u for u in updates if u.status not in NOT_DRIVING]
        if not driving:
            return
        pipe = self._bus.redis.pipeline(transaction=False)
        for update in driving:
            pipe.hmget(route_plans.plan_key(update.driver_id), route_plans.HEADER_FIELDS)
        headers = await pipe.execute()
        planned = [
            (update, _text(route_id), int(version))
            for update, (route_id, version) in zip(driving, headers, strict=True)
            if route_id is not None and version is not None
        ]
        if planned:
            await self._check(planned)

    async def _check(self, planned: Sequence[tuple[PositionUpdate, str, int]]) -> None:
        redis = self._bus.redis
        stale = [u.driver_id for u, route, version in planned if not self._fresh(u, route, version)]
        pipe = redis.pipeline(transaction=False)
        for update, _, _ in planned:
            pipe.hgetall(state_key(update.driver_id))
        for driver_id in stale:
            pipe.hget(route_plans.plan_key(driver_id), route_plans.FIELD_ROUTE)
        replies = await pipe.execute()
        states, routes = replies[: len(planned)], replies[len(planned) :]
        for driver_id, raw in zip(stale, routes, strict=True):
            if raw is not None:
                self._remember(driver_id, plan_of(route_pb2.Route.FromString(bytes(raw))))
        writes: list[tuple[str, Guidance]] = []
        for (update, _, _), raw_state in zip(planned, states, strict=True):
            plan = self._plans.get(update.driver_id)
            if plan is None:
                continue
            before = Guidance.decode({_text(k): _text(v) for k, v in raw_state.items()})
            after, fired = self._driver(update, before, plan)
            if fired is not None:
                await self._publish(update.driver_id, plan, fired)
            if after != before:
                writes.append((update.driver_id, after))
        await self._write(writes)

    def _fresh(self, update: PositionUpdate, route_id: str, version: int) -> bool:
        plan = self._plans.get(update.driver_id)
        return plan is not None and (plan.route_id, plan.version) == (route_id, version)

    def _remember(self, driver_id: str, plan: Plan) -> None:
        self._plans[driver_id] = plan
        self._plans.move_to_end(driver_id)
        while len(self._plans) > max(1, self._settings.off_route_cached_plans):
            self._plans.popitem(last=False)

    def _driver(
        self, update: PositionUpdate, state: Guidance, plan: Plan
    ) -> tuple[Guidance, OffRoute | None]:
        fired: OffRoute | None = None
        for fix in update.fixes:
            at_ms = round(fix.at.timestamp() * 1000)
            state, event = step(state, plan, fix.snapped or fix.position, at_ms, self._limits)
            fired = fired or event
        return state, fired

    async def _publish(self, driver_id: str, plan: Plan, off: OffRoute) -> None:
        at = Timestamp()
        at.FromMilliseconds(off.at_ms)
        event = tracking_pb2.OffRouteEvent(
            driver_id=driver_id,
            route_id=plan.route_id,
            route_version=plan.version,
            position=common_pb2.LatLng(lat=off.position.lat, lng=off.position.lng),
            at=at,
            distance_m=off.distance_m,
        )
        await self._bus.append(
            topics.OFF_ROUTE_EVENTS,
            {"driver": driver_id, "data": event.SerializeToString()},
            maxlen=self._settings.off_route_events_maxlen,
        )
        log.info(
            "driver off route",
            extra={"driver": driver_id, "route_id": plan.route_id, "version": plan.version},
        )

    async def _write(self, writes: Sequence[tuple[str, Guidance]]) -> None:
        if not writes:
            return
        pipe: Any = self._bus.redis.pipeline(transaction=False)
        for driver_id, state in writes:
            pipe.hset(state_key(driver_id), mapping=state.encode())
            pipe.expire(state_key(driver_id), STATE_TTL_S)
        await pipe.execute()
