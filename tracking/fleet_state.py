"""FleetService.GetDriverState and GetDriverPath: the handlers' logic, called by the Fleet
servicer in tracking/service.py (which only delegates here); GetEtaAccuracy is bound here too
(its logic: tracking/eta_accuracy.py).

Both need a dispatcher or service token and answer only about drivers of the caller's tenant:
the tenant in the driver's live state (from its token), or for a driver without live state its
tenant in the driver registry. Another tenant's driver gets the same NOT_FOUND as an unknown
one. A path covers at most 24 hours per call and returns the stored fixes oldest first, with
their road-snapped position when asked for: ingest snaps only the fix it shows (the latest of
each driver in a round, tracking.snapping), so the others are snapped here, on the road workers,
with the same rule (no road within ``snap_max_distance_m``: no snapped position).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core.auth import Role, require
from core.bus import Bus
from core.db import Database
from core.errors import InvalidArgument, NotFound
from core.geo import LatLng
from core.inputs import client_range
from core.road_pool import RoadPool
from core.settings import Settings
from tracking.eta_accuracy import EtaAccuracyReport
from tracking.history import History
from tracking.live_state import LiveState

MAX_PATH_SPAN = dt.timedelta(hours=24)


async def in_tenant(live: LiveState, database: Database, driver_id: str, tenant_id: str) -> bool:
    """Whether the driver belongs to the tenant (live state first, else the registry)."""
    if await live.get_in_tenant(driver_id, tenant_id) is not None:
        return True
    if await live.get(driver_id) is not None:
        return False  # live state names another tenant
    registered = await database.pool.fetchval(
        "SELECT tenant_id FROM drivers WHERE driver_id = $1", driver_id
    )
    return bool(registered == tenant_id)


async def get_driver_state(
    live: LiveState, request: fleet_service_pb2.GetDriverStateRequest
) -> fleet_service_pb2.GetDriverStateResponse:
    """The driver's live state; NOT_FOUND when it never reported or is another tenant's."""
    caller = require(Role.DISPATCHER, Role.SERVICE)
    if not request.driver_id:
        raise InvalidArgument("driver_id is required")
    state = await live.get_in_tenant(request.driver_id, caller.tenant_id)
    if state is None:
        raise NotFound(f"driver {request.driver_id} has no live state")
    return fleet_service_pb2.GetDriverStateResponse(driver=state)


Snap = Callable[[Sequence[LatLng]], Awaitable[list[LatLng | None]]]


async def get_driver_path(
    history: History,
    settings: Settings,
    request: fleet_service_pb2.GetDriverPathRequest,
    member: Callable[[str], Awaitable[bool]],
    snap: Snap,
) -> fleet_service_pb2.GetDriverPathResponse:
    """Stored fixes in [start, end) (at most 24 h), oldest first; ``member`` says whether a
    driver is the caller's tenant's (NOT_FOUND otherwise); ``snap`` puts the fixes stored
    without a snapped position on the road when the request asks for snapped positions."""
    require(Role.DISPATCHER, Role.SERVICE)
    if not request.driver_id:
        raise InvalidArgument("driver_id is required")
    start, end = client_range(request, MAX_PATH_SPAN)
    if not await member(request.driver_id):
        raise NotFound(f"driver {request.driver_id} not found")
    rows = await history.path(request.driver_id, start, end, settings.path_max_points)
    response = fleet_service_pb2.GetDriverPathResponse()
    for row in rows:
        point = response.points.add()
        fix = point.fix
        fix.captured_at.FromDatetime(row["recorded_at"])
        fix.position.lat, fix.position.lng = row["lat"], row["lng"]
        fix.accuracy_m = row["accuracy_m"]
        fix.speed_mps = row["speed_mps"]
        fix.heading_deg = row["heading_deg"]
        if request.snapped and row["snapped_lat"] is not None:
            point.snapped.lat, point.snapped.lng = row["snapped_lat"], row["snapped_lng"]
    if request.snapped:
        await _snap_the_rest(response.points, snap)
    return response


async def _snap_the_rest(points: Sequence[tracking_pb2.PathPoint], snap: Snap) -> None:
    """Snapped positions for the points stored without one."""
    raw = [p for p in points if not p.HasField("snapped")]
    if not raw:
        return
    found = await snap([LatLng(p.fix.position.lat, p.fix.position.lng) for p in raw])
    for point, snapped in zip(raw, found, strict=True):
        if snapped is not None:
            point.snapped.lat, point.snapped.lng = snapped.lat, snapped.lng


class FleetStateHandlers:
    """The three RPCs bound to the process's Redis, PostgreSQL and road workers (used after
    they started)."""

    def __init__(self, settings: Settings, bus: Bus, database: Database, roads: RoadPool) -> None:
        self._settings = settings
        self._bus = bus
        self._database = database
        self._roads = roads
        self._eta_accuracy = EtaAccuracyReport(settings, database)

    async def get_eta_accuracy(
        self, request: fleet_service_pb2.GetEtaAccuracyRequest
    ) -> fleet_service_pb2.GetEtaAccuracyResponse:
        """FleetService.GetEtaAccuracy."""
        return await self._eta_accuracy.get(request)

    async def get_driver_state(
        self, request: fleet_service_pb2.GetDriverStateRequest
    ) -> fleet_service_pb2.GetDriverStateResponse:
        """FleetService.GetDriverState."""
        return await get_driver_state(LiveState(self._bus.redis), request)

    async def get_driver_path(
        self, request: fleet_service_pb2.GetDriverPathRequest
    ) -> fleet_service_pb2.GetDriverPathResponse:
        """FleetService.GetDriverPath."""
        history = History(self._database.pool, self._settings)
        tenant_id = require(Role.DISPATCHER, Role.SERVICE).tenant_id
        live = LiveState(self._bus.redis)

        async def member(driver_id: str) -> bool:
            return await in_tenant(live, self._database, driver_id, tenant_id)

        async def snap(points: Sequence[LatLng]) -> list[LatLng | None]:
            return await self._roads.snap_each(points, self._settings.snap_max_distance_m)

        return await get_driver_path(history, self._settings, request, member, snap)
