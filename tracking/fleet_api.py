"""FleetService search, geofence, watch and tracking-interval RPCs: the handlers' logic, called
by the Fleet servicer in tracking/service.py (which only delegates here).

Every RPC needs a dispatcher or service token (UNAUTHENTICATED without one) and sees only the
caller's tenant: its geofences, its drivers (search, fleet watch), the geofence events of its
fences, its tracking intervals. Another tenant's driver or fence looks exactly like one that
does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core import topics, tracking_intervals
from core.auth import Principal, Role, require
from core.bus import Bus
from core.db import Database
from core.errors import InvalidArgument
from core.road_pool import RoadPool
from core.roads import RoadNetwork
from core.settings import Settings
from tracking.fleet_watch import watch_fleet
from tracking.geofence_events import watch_geofence_events
from tracking.geofence_observer import GeofenceObserver
from tracking.geofences import GeofenceStore
from tracking.search import DriverSearch


def _caller() -> Principal:
    return require(Role.DISPATCHER, Role.SERVICE)


class FleetHandlers:
    """A host component (it needs the started pools) holding the fleet RPC logic."""

    service_names: tuple[str, ...] = ()

    def __init__(
        self, settings: Settings, bus: Bus, database: Database, roads: RoadNetwork
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._pool = RoadPool(roads, settings.road_workers)
        self._search: DriverSearch | None = None
        self.store = GeofenceStore(database, bus, settings)
        self._intervals = tracking_intervals.IntervalStore(database)

    def register(self, server: object) -> None:
        """No servicer of its own."""

    async def start(self) -> None:
        """Bind to the started database and Redis; start the isochrones' road workers."""
        await self._pool.start()
        self._search = DriverSearch(self._bus.redis, self._pool, self._settings)

    async def stop(self) -> None:
        """Stop the road workers."""
        self._pool.stop()

    @property
    def road_pool(self) -> RoadPool:
        """The road workers (started with this component), shared with the path reader."""
        return self._pool

    def geofence_observer(self) -> GeofenceObserver:
        """A processor observer raising geofence events (add it before the processor starts)."""
        return GeofenceObserver(self.store, self._bus, self._settings)

    async def search_drivers(
        self, request: fleet_service_pb2.SearchDriversRequest
    ) -> fleet_service_pb2.SearchDriversResponse:
        """Drivers inside an area, nearest first."""
        caller = _caller()
        assert self._search is not None
        return await self._search.search(request, caller.tenant_id)

    async def get_tracking_intervals(
        self, request: fleet_service_pb2.GetTrackingIntervalsRequest
    ) -> fleet_service_pb2.GetTrackingIntervalsResponse:
        """The caller's tenant's intervals in force."""
        caller = _caller()
        stored = (await self._intervals.load([caller.tenant_id])).get(caller.tenant_id)
        return fleet_service_pb2.GetTrackingIntervalsResponse(intervals=self._view(stored))

    async def update_tracking_intervals(
        self, request: fleet_service_pb2.UpdateTrackingIntervalsRequest
    ) -> fleet_service_pb2.UpdateTrackingIntervalsResponse:
        """Check and store the tenant's intervals, then announce them to the gateways."""
        caller = _caller()
        wanted = tracking_intervals.overrides_from_proto(request.intervals)
        tracking_intervals.check(
            tracking_intervals.effective(wanted, self._settings), self._settings
        )
        stored = await self._intervals.save(caller.tenant_id, wanted)
        await self._bus.publish(topics.TRACKING_INTERVALS, caller.tenant_id.encode())
        return fleet_service_pb2.UpdateTrackingIntervalsResponse(intervals=self._view(stored))

    def _view(self, stored: tracking_intervals.Overrides | None) -> tracking_pb2.TrackingIntervals:
        in_force = tracking_intervals.effective(stored, self._settings)
        return tracking_intervals.to_proto(in_force, stored.updated_at if stored else None)

    async def create_geofence(
        self, request: fleet_service_pb2.CreateGeofenceRequest
    ) -> fleet_service_pb2.CreateGeofenceResponse:
        """Store a fence in the caller's tenant."""
        caller = _caller()
        if not request.HasField("geofence"):
            raise InvalidArgument("geofence is required")
        fence = await self.store.create(caller.tenant_id, request.geofence)
        return fleet_service_pb2.CreateGeofenceResponse(geofence=fence.to_proto())

    async def get_geofence(
        self, request: fleet_service_pb2.GetGeofenceRequest
    ) -> fleet_service_pb2.GetGeofenceResponse:
        """One fence of the caller's tenant."""
        caller = _caller()
        if not request.geofence_id:
            raise InvalidArgument("geofence_id is required")
        fence = await self.store.get(caller.tenant_id, request.geofence_id)
        return fleet_service_pb2.GetGeofenceResponse(geofence=fence.to_proto())

    async def list_geofences(
        self, request: fleet_service_pb2.ListGeofencesRequest
    ) -> fleet_service_pb2.ListGeofencesResponse:
        """A page of the tenant's fences, optionally of one order."""
        caller = _caller()
        fences, token = await self.store.page(
            caller.tenant_id, request.order_id, request.page_size, request.page_token
        )
        return fleet_service_pb2.ListGeofencesResponse(
            geofences=[f.to_proto() for f in fences], next_page_token=token
        )

    async def delete_geofence(
        self, request: fleet_service_pb2.DeleteGeofenceRequest
    ) -> fleet_service_pb2.DeleteGeofenceResponse:
        """Remove a fence (no error when it is already gone)."""
        caller = _caller()
        if not request.geofence_id:
            raise InvalidArgument("geofence_id is required")
        await self.store.delete(caller.tenant_id, request.geofence_id)
        return fleet_service_pb2.DeleteGeofenceResponse()

    async def watch_fleet(
        self, request: fleet_service_pb2.WatchFleetRequest
    ) -> AsyncIterator[fleet_service_pb2.WatchFleetResponse]:
        """Live driver states for a dashboard."""
        caller = _caller()
        async for message in watch_fleet(
            self._bus.redis, self._settings, request, caller.tenant_id
        ):
            yield message

    async def watch_geofence_events(
        self, request: fleet_service_pb2.WatchGeofenceEventsRequest
    ) -> AsyncIterator[fleet_service_pb2.WatchGeofenceEventsResponse]:
        """Geofence transitions, replayed after a cursor and then live."""
        caller = _caller()
        async for message in watch_geofence_events(
            self._bus.redis, self._settings, request, caller.tenant_id
        ):
            yield message
