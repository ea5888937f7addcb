"""The ETA engine (a processor PositionObserver): OSRM arrivals for the customers of each
driver, refreshed per driver when it matters, never per ping per order.

A driver's ETAs are recomputed when it moved enough, when they are old, or when its orders
changed (:mod:`tracking.eta_refresh`), with one OSRM route from the snapped position through
the remaining stops (:mod:`tracking.eta_plan`).

Per order the result is kept in Redis (``eta_key``: ``fix_ms``, ``eta_ms``, ``remaining_m``,
``line`` as JSON ``[[lat, lng], ...]``) for snapshots, published as ``TrackResponse{eta}`` (and
``{route_line}`` when the line no longer continues the previous one) on the order's channel,
in one script that drops an ETA older (by fix time) than the one stored,
and recorded in ``eta_predictions`` so the error against the actual arrival can be reported
(``eta_errors``, core/migrations/0004_eta.sql).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.tracking.v1 import tracking_service_pb2

from core import topics
from core.bus import Bus
from core.db import Database
from core.geo import LatLng
from core.redis_scripts import Script, execute
from core.roads import NoRoute, RoadNetwork
from core.settings import Settings
from tracking.active_orders import VISIBLE, ActiveOrder, ActiveOrders
from tracking.eta_plan import (
    PICKUP,
    OrderEta,
    Stop,
    estimate,
    line_continues,
    line_text,
    stops_from_orders,
)
from tracking.eta_refresh import RefreshPolicy
from tracking.fanout import approximate
from tracking.positions import PositionUpdate

log = logging.getLogger(__name__)
#: How long per-order ETAs and per-driver refresh marks outlive their last refresh.
STATE_TTL_S = 6 * 3600

# Store and publish one order's ETA unless a newer fix's ETA is stored already. Every tracking
# process consumes every shard, so two batches of one driver can be routed at once and finish
# in either order; customers must never see the older one last.
# KEYS[1] eta key; ARGV: fix ms, eta ms, remaining m, line JSON, ttl s, channel, eta message,
# line message ('' = the line continues, none sent).
_STORE = Script("""
local last = tonumber(redis.call('HGET', KEYS[1], 'fix_ms') or '0')
if tonumber(ARGV[1]) < last then return 0 end
redis.call('HSET', KEYS[1], 'fix_ms', ARGV[1], 'eta_ms', ARGV[2], 'remaining_m', ARGV[3],
           'line', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[8]) end
return 1
""")


def eta_key(order_id: str) -> str:
    """The latest ETA of one order (hash)."""
    return f"lastmile:eta:order:{order_id}"


def _signature(orders: Sequence[ActiveOrder]) -> str:
    """Changes when the ETAs must be computed again whatever the driver did: an order came,
    went, changed status or got a new ready time."""
    return ",".join(f"{o.order_id}:{o.status}:{o.ready_at}" for o in orders)


def parse_line(raw: bytes | str | None) -> list[LatLng]:
    """A stored line back as points (empty when absent)."""
    return [LatLng(lat, lng) for lat, lng in json.loads(raw)] if raw else []


class EtaEngine:
    """Refreshes, stores, publishes and records ETAs; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        database: Database,
        roads: RoadNetwork,
        active: ActiveOrders,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._database = database
        self._roads = roads
        self._active = active
        self._refresh = RefreshPolicy(settings)

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        """Refresh the ETAs of the drivers of this batch that need it."""
        if not updates:
            return
        orders = await self._active.of_batch(updates)
        serving = [u for u in updates if any(o.status in VISIBLE for o in orders[u.driver_id])]
        if not serving:
            return
        signatures = {u.driver_id: _signature(orders[u.driver_id]) for u in serving}
        due = self._refresh.due(serving, signatures, time.time())
        if not due:
            return
        stops = await self._planned_stops(due, orders)
        now = dt.datetime.now(dt.UTC)
        results: list[tuple[PositionUpdate, list[OrderEta]]] = []
        for update in due:
            visible = [o for o in orders[update.driver_id] if o.status in VISIBLE]
            driver_stops = stops.get(update.driver_id) or stops_from_orders(
                visible, self._settings.eta_pickup_service_s, self._settings.eta_drop_off_service_s
            )
            results.append((update, self._route(update, driver_stops, visible, now)))
            # A route holds the loop for a millisecond or two: let the Track streams send the
            # positions just published between routes, not after all of them.
            await asyncio.sleep(0)
        await self._store_and_publish(results)
        self._refresh.computed(due, signatures, time.time())
        await self._record(results, now)

    async def _planned_stops(
        self, due: Sequence[PositionUpdate], orders: dict[str, list[ActiveOrder]]
    ) -> dict[str, list[Stop]]:
        """Uncompleted stops of the drivers' planned routes (one query for the batch)."""
        route_of = {
            u.driver_id: route
            for u in due
            for route in {o.route_id for o in orders[u.driver_id] if o.route_id}
        }
        if not route_of:
            return {}
        async with self._database.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT route_id, kind, coalesce(order_id, '') AS order_id, lat, lng,"
                " service_time_s, window_start FROM route_stops"
                " WHERE route_id = ANY($1::text[]) AND completed_at IS NULL"
                " ORDER BY route_id, position",
                sorted(set(route_of.values())),
            )
        # A ready time read now beats the one the route was planned with (a kitchen may have
        # said "ready" early or asked for more time since).
        ready_of = {o.order_id: o.ready_at for u in due for o in orders[u.driver_id]}
        by_route: dict[str, list[Stop]] = {}
        for row in rows:
            order_id = row["order_id"]
            ready = None
            if row["kind"] == PICKUP:
                ready = ready_of[order_id] if order_id in ready_of else row["window_start"]
            by_route.setdefault(row["route_id"], []).append(
                Stop(
                    LatLng(row["lat"], row["lng"]),
                    row["kind"],
                    order_id,
                    float(row["service_time_s"]),
                    ready,
                )
            )
        return {driver: by_route.get(route, []) for driver, route in route_of.items()}

    def _route(
        self,
        update: PositionUpdate,
        stops: Sequence[Stop],
        visible: Sequence[ActiveOrder],
        now: dt.datetime,
    ) -> list[OrderEta]:
        if not stops:
            return []
        try:
            route = self._roads.route([update.shown, *(s.position for s in stops)])
        except NoRoute:
            log.info("no route for ETA", extra={"driver": update.driver_id})
            return []
        return estimate(route, stops, now, {o.order_id for o in visible})

    async def _store_and_publish(
        self,
        results: Sequence[tuple[PositionUpdate, list[OrderEta]]],
    ) -> None:
        redis = self._bus.redis
        read = redis.pipeline(transaction=False)
        etas = [eta for _, driver_etas in results for eta in driver_etas]
        for eta in etas:
            read.hget(eta_key(eta.order_id), "line")
        old_lines = await read.execute()
        pipe = redis.pipeline(transaction=False)
        decimals = self._settings.customer_position_decimals
        fix_ms = {
            eta.order_id: int(update.at.timestamp() * 1000)
            for update, driver_etas in results
            for eta in driver_etas
        }
        for found, old in zip(etas, old_lines, strict=True):
            # The line starts at the driver: customers get that start only approximately.
            eta = replace(found, line=(approximate(found.line[0], decimals), *found.line[1:]))
            text = line_text(eta.line)
            line = b"" if line_continues((old or b"").decode(), text) else line_message(eta.line)
            _STORE.queue(
                pipe,
                [eta_key(eta.order_id)],
                [
                    fix_ms[eta.order_id],
                    int(eta.arrival.timestamp() * 1000),
                    eta.remaining_m,
                    text,
                    STATE_TTL_S,
                    topics.order_channel(eta.order_id),
                    eta_message(eta),
                    line,
                ],
            )
        await execute(pipe, redis)

    async def _record(
        self, results: Sequence[tuple[PositionUpdate, list[OrderEta]]], now: dt.datetime
    ) -> None:
        """Append the predictions (one COPY) so their error can be reported later."""
        rows = [
            (eta.order_id, update.driver_id, now, eta.arrival, eta.remaining_s, eta.remaining_m)
            for update, driver_etas in results
            for eta in driver_etas
        ]
        if not rows:
            return
        async with self._database.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "eta_predictions",
                records=rows,
                columns=[
                    "order_id",
                    "driver_id",
                    "predicted_at",
                    "predicted_arrival",
                    "remaining_s",
                    "remaining_m",
                ],
            )


def eta_message(eta: OrderEta) -> bytes:
    """The serialized TrackResponse{eta} of one order."""
    response = tracking_service_pb2.TrackResponse()
    stamp = Timestamp()
    stamp.FromDatetime(eta.arrival)
    response.eta.eta.CopyFrom(stamp)
    response.eta.remaining_distance_m = eta.remaining_m
    return response.SerializeToString()


def line_message(line: Sequence[LatLng]) -> bytes:
    """The serialized TrackResponse{route_line}."""
    response = tracking_service_pb2.TrackResponse()
    response.route_line.SetInParent()
    for point in line:
        response.route_line.points.add(lat=point.lat, lng=point.lng)
    return response.SerializeToString()
