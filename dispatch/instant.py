"""Instant dispatch: a worker of the dispatch process that matches PENDING instant orders to
drivers in micro-batches and offers them (dispatch.offers makes, answers and expires offers).

A round runs every ``instant_batch_interval_s``, or at once when ``instant_batch_orders``
wait. It reads the oldest PENDING instant orders of the internal fleet, finds candidate
drivers per tenant, asks OSRM for ONE duration table over drivers, pickups and drop-offs,
and lets :mod:`dispatch.matching` decide. A sweeper expires offers not answered in time.

Candidates are read straight from the live state in Redis (``core.live_state_keys``, the
shared kernel the tracking processor writes): one GEOSEARCH per distinct pickup and one
pipelined read of the drivers' hashes. FleetService.SearchDrivers over gRPC would be the
cleaner boundary, but it costs a network hop, a token and a process dependency per round,
in the loop where seconds matter, for what is a documented key layout already shared with
other readers; the tenant, the ``active`` flag and each driver's load come from PostgreSQL,
which dispatch owns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from core import live_state_keys as keys
from core.geo import LatLng
from core.roads import Matrix, RoadNetwork, graph_exists
from core.settings import Settings
from core.workers import cancel
from dispatch import matching, offers, origin_orders
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.convert import now

log = logging.getLogger(__name__)

#: Driver statuses that may get an offer (working, not on a break or offline).
OFFERABLE_STATUSES = frozenset(
    {
        common_pb2.DRIVER_STATUS_IDLE,
        common_pb2.DRIVER_STATUS_TO_PICKUP,
        common_pb2.DRIVER_STATUS_AT_PICKUP,
        common_pb2.DRIVER_STATUS_DELIVERING,
    }
)
#: Order statuses in which an order counts towards its driver's load.
CARRYING = (sm.OFFERED, sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP, sm.PICKED_UP, sm.NEARBY)


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """A PENDING instant order as the matcher needs it."""

    tenant_id: str
    job: matching.Job


def weights_of(settings: Settings) -> matching.Weights:
    """The matcher's weights from settings."""
    return matching.Weights(
        pickup_weight=settings.instant_pickup_weight,
        wait_weight=settings.instant_wait_weight,
        spread_s=settings.instant_spread_s,
        batch_bonus=settings.instant_batch_bonus,
        age_weight=settings.instant_age_weight,
        max_detour_s=settings.instant_max_detour_s,
        min_batch_saving_s=settings.instant_min_batch_saving_s,
        max_batch=settings.instant_max_batch,
        max_load=settings.instant_max_driver_load,
        max_pickup_s=settings.instant_max_pickup_s,
    )


class InstantDispatcher:
    """Background component: the micro-batch loop and the offer-expiry sweeper."""

    service_names: tuple[str, ...] = ()

    def __init__(self, ctx: DispatchContext, roads: RoadNetwork | None = None) -> None:
        self._ctx = ctx
        self._roads = roads
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: object) -> None:
        """No servicer: a worker."""

    async def start(self) -> None:
        """Open the road network (unless given) and start both loops."""
        if not self._ctx.settings.instant_enabled:
            return
        if self._roads is None:
            self._roads = _open_roads(self._ctx.settings.graph_path)
            if self._roads is None:
                return
        self._tasks = [
            asyncio.create_task(self._rounds(), name="instant-rounds"),
            asyncio.create_task(self._sweeper(), name="instant-sweeper"),
        ]

    async def stop(self) -> None:
        """Stop both loops; offers in flight stay in Redis and expire as usual."""
        for task in self._tasks:
            await cancel(task)

    async def _rounds(self) -> None:
        settings = self._ctx.settings
        last = 0.0
        while True:
            try:
                waiting = await self._count_pending()
                due = time.monotonic() - last >= settings.instant_batch_interval_s
                if waiting and (due or waiting >= settings.instant_batch_orders):
                    last = time.monotonic()
                    await self.run_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("instant round failed; retrying")
            # Look often enough to catch a full batch early (a fraction of the interval).
            await asyncio.sleep(settings.instant_batch_interval_s / 4)

    async def _sweeper(self) -> None:
        settings = self._ctx.settings
        while True:
            try:
                await offers.expire_due(self._ctx)
                await offers.release_orphans(self._ctx, 2 * settings.instant_offer_timeout_s + 5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("offer sweep failed; retrying")
            await asyncio.sleep(settings.instant_sweep_interval_s)

    async def _count_pending(self) -> int:
        async with self._ctx.database.pool.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM orders o WHERE o.status = $1 AND o.kind = $2"
                f" AND o.fleet = $3 AND {origin_orders.DISPATCHABLE_SQL}",
                sm.PENDING,
                dispatch_pb2.ORDER_KIND_INSTANT,
                dispatch_pb2.FLEET_KIND_INTERNAL,
            )
        return int(count)

    async def run_round(self) -> int:
        """Match and offer once; returns how many orders were offered."""
        pending = await self._pending_orders()
        by_tenant: dict[str, list[matching.Job]] = defaultdict(list)
        for order in pending:
            by_tenant[order.tenant_id].append(order.job)
        offered = 0
        for tenant_id in sorted(by_tenant):
            offered += await self._match_tenant(tenant_id, by_tenant[tenant_id])
        return offered

    async def _pending_orders(self) -> list[PendingOrder]:
        async with self._ctx.database.pool.acquire() as conn:
            # Ready for pickup: when the pickup window opens or its origin expects it ready,
            # whichever is later; orders their origin has not accepted wait.
            rows = await conn.fetch(
                "SELECT o.order_id, o.tenant_id, o.pickup_lat, o.pickup_lng, o.drop_off_lat,"
                f" o.drop_off_lng, GREATEST(o.pickup_start, {origin_orders.READY_AT_SQL})"
                " AS pickup_start, o.created_at FROM orders o WHERE o.status = $1 AND o.kind = $2"
                f" AND o.fleet = $3 AND {origin_orders.DISPATCHABLE_SQL}"
                " ORDER BY o.created_at LIMIT $4",
                sm.PENDING,
                dispatch_pb2.ORDER_KIND_INSTANT,
                dispatch_pb2.FLEET_KIND_INTERNAL,
                self._ctx.settings.instant_batch_max_orders,
            )
        current = now()
        return [
            PendingOrder(
                r["tenant_id"],
                matching.Job(
                    r["order_id"],
                    LatLng(r["pickup_lat"], r["pickup_lng"]),
                    LatLng(r["drop_off_lat"], r["drop_off_lng"]),
                    _ready_in(r["pickup_start"], current),
                    max(0.0, (current - r["created_at"]).total_seconds()),
                ),
            )
            for r in rows
        ]

    async def _match_tenant(self, tenant_id: str, jobs: list[matching.Job]) -> int:
        candidates = await self._candidates(tenant_id, jobs)
        if not candidates:
            return 0
        points = matching.matrix_points(jobs, candidates)
        assert self._roads is not None
        # One table per micro-batch (OSRM holds the GIL: never a call per pair).
        table = await asyncio.to_thread(self._roads.table, points)
        excluded = await offers.exclusions(self._ctx, [j.order_id for j in jobs])
        weights = weights_of(self._ctx.settings)
        assignments = matching.match(jobs, candidates, table.durations_s, weights, excluded)
        offered = 0
        for assignment in assignments:
            plan = offers.OfferPlan(
                offer_id="off_" + uuid.uuid4().hex,
                tenant_id=tenant_id,
                driver_id=assignment.driver_id,
                order_ids=assignment.order_ids,
                added_distance_m=_distance(table, points, candidates, assignment, jobs),
                added_duration_s=assignment.pickup_s + assignment.wait_s + assignment.tour_s,
                details={
                    "score": assignment.score,
                    "pickup_s": assignment.pickup_s,
                    "batched": len(assignment.order_ids) > 1,
                    "saving_s": assignment.saving_s,
                    "wait_s": assignment.wait_s,
                    # Seconds from the offer, per order: at its pickup / picking it up.
                    "arrival_s": dict(zip(assignment.order_ids, assignment.arrival_s, strict=True)),
                    "pickup_at_s": dict(
                        zip(assignment.order_ids, assignment.pickup_at_s, strict=True)
                    ),
                },
            )
            offered += len(await offers.make_offer(self._ctx, plan))
        return offered

    async def _candidates(
        self, tenant_id: str, jobs: Sequence[matching.Job]
    ) -> list[matching.Candidate]:
        """Drivers near the pickups, working, fresh, active in the tenant, without an open
        offer, with their load (see the module docstring)."""
        settings = self._ctx.settings
        redis = self._ctx.bus.redis
        found: set[str] = set()
        for pickup in sorted({j.pickup for j in jobs}, key=lambda p: (p.lat, p.lng)):
            members: Any = await redis.geosearch(
                keys.DRIVERS_GEO,
                longitude=pickup.lng,
                latitude=pickup.lat,
                radius=settings.instant_search_radius_m,
                unit="m",
                sort="ASC",
                count=settings.instant_max_candidates,
            )
            found.update(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        if not found:
            return []
        ids = sorted(found)
        pipe = redis.pipeline(transaction=False)
        for driver_id in ids:
            pipe.hgetall(keys.driver_key(driver_id))
        states: list[Any] = await pipe.execute()
        live = {d: _live(s, settings) for d, s in zip(ids, states, strict=True)}
        usable = [d for d, position in live.items() if position is not None]
        loads, offered = await self._loads(tenant_id, usable)
        return [
            matching.Candidate(d, live_position, loads.get(d, 0))
            for d in usable
            if d in loads and d not in offered and (live_position := live[d]) is not None
        ]

    async def _loads(
        self, tenant_id: str, driver_ids: list[str]
    ) -> tuple[dict[str, int], set[str]]:
        """Active drivers of the tenant -> orders they carry; and drivers with an open offer."""
        async with self._ctx.database.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT d.driver_id, count(o.order_id) AS load,"
                " count(o.order_id) FILTER (WHERE o.status = $3) AS offered"
                " FROM drivers d LEFT JOIN orders o ON o.driver_id = d.driver_id"
                " AND o.status = ANY($4::smallint[])"
                " WHERE d.tenant_id = $1 AND d.active AND d.driver_id = ANY($2::text[])"
                " GROUP BY d.driver_id",
                tenant_id,
                driver_ids,
                sm.OFFERED,
                list(CARRYING),
            )
        return (
            {r["driver_id"]: int(r["load"]) for r in rows},
            {r["driver_id"] for r in rows if r["offered"]},
        )


def _open_roads(path: Path) -> RoadNetwork | None:
    """The road network, None (and instant dispatch off, logged) when there is no graph: the
    rest of the dispatch process works without one."""
    if not graph_exists(path):
        log.error("instant dispatch off: no road graph at %s", path)
        return None
    return RoadNetwork(path)


def _live(state: dict[Any, Any], settings: Settings) -> LatLng | None:
    """The driver's position when it may get an offer (status offerable, position fresh)."""
    fields = {_text(k): _text(v) for k, v in state.items()}
    try:
        status = int(fields.get(keys.FIELD_STATUS) or 0)
        lat, lng = float(fields[keys.FIELD_LAT]), float(fields[keys.FIELD_LNG])
        at_ms = int(fields.get(keys.FIELD_POSITION_AT) or 0)
    except (KeyError, ValueError):
        return None
    age_s = time.time() - at_ms / 1000.0
    if status not in OFFERABLE_STATUSES or age_s > settings.instant_stale_position_s:
        return None
    return LatLng(lat, lng)


def _ready_in(pickup_start: dt.datetime | None, current: dt.datetime) -> float:
    """Seconds until the order is ready for pickup (the later of its pickup window's start and
    its origin's ready_at), at least 0."""
    if pickup_start is None:
        return 0.0
    return max(0.0, (pickup_start - current).total_seconds())


def _distance(
    table: Matrix,
    points: Sequence[LatLng],
    candidates: Sequence[matching.Candidate],
    assignment: matching.Assignment,
    jobs: Sequence[matching.Job],
) -> float:
    """Metres of the offered tour: driver, pickups in order, drop-offs in visiting order."""
    ordered = sorted(candidates, key=lambda c: c.driver_id)
    sorted_jobs = sorted(jobs, key=lambda j: j.order_id)
    index = {j.order_id: i for i, j in enumerate(sorted_jobs)}
    driver = next(i for i, c in enumerate(ordered) if c.driver_id == assignment.driver_id)
    stops = [driver]
    stops += [len(ordered) + index[o] for o in assignment.order_ids]
    stops += [len(ordered) + len(sorted_jobs) + index[o] for o in assignment.drop_off_order]
    total = 0.0
    for a, b in itertools.pairwise(stops):
        leg = table.distances_m[a][b] if table.distances_m else None
        total += leg or 0.0
    return round(total, 1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
