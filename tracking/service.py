"""TrackingService (customers) and FleetService (dispatchers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lastmile.tracking.v1 import (
    fleet_service_pb2,
    fleet_service_pb2_grpc,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)

from core.runtime import Servicer
from tracking.customer import CustomerTracking
from tracking.fleet_api import FleetHandlers
from tracking.fleet_state import FleetStateHandlers


class Tracking(tracking_service_pb2_grpc.TrackingServiceServicer):
    """Customer tracking by token (Track stream, GetTracking polling twin)."""

    #: Customer handlers (tracking/customer.py), set by ``components``.
    customer: CustomerTracking | None = None

    def _customer(self) -> CustomerTracking:
        assert self.customer is not None
        return self.customer

    async def Track(
        self, request: tracking_service_pb2.TrackRequest, context: Any
    ) -> AsyncIterator[tracking_service_pb2.TrackResponse]:
        """A snapshot, then live updates; ends with OK on a final status or a dead link."""
        async for message in self._customer().track(request):
            yield message

    async def GetTracking(
        self, request: tracking_service_pb2.GetTrackingRequest, context: Any
    ) -> tracking_service_pb2.GetTrackingResponse:
        """The current snapshot (polling twin of Track)."""
        return await self._customer().get_tracking(request)


class Fleet(fleet_service_pb2_grpc.FleetServiceServicer):
    """Fleet view, driver search, geofences, driver paths, ETA accuracy, tracking intervals."""

    #: Live state and path handlers (tracking/fleet_state.py), set by ``components``.
    state_handlers: FleetStateHandlers | None = None

    async def GetDriverState(
        self, request: fleet_service_pb2.GetDriverStateRequest, context: Any
    ) -> fleet_service_pb2.GetDriverStateResponse:
        """Live state of one driver (delegates to tracking.fleet_state)."""
        assert self.state_handlers is not None
        return await self.state_handlers.get_driver_state(request)

    async def GetDriverPath(
        self, request: fleet_service_pb2.GetDriverPathRequest, context: Any
    ) -> fleet_service_pb2.GetDriverPathResponse:
        """Stored positions of a driver over at most 24 h (delegates to tracking.fleet_state)."""
        assert self.state_handlers is not None
        return await self.state_handlers.get_driver_path(request)

    async def GetEtaAccuracy(
        self, request: fleet_service_pb2.GetEtaAccuracyRequest, context: Any
    ) -> fleet_service_pb2.GetEtaAccuracyResponse:
        """ETA error against the deliveries of a time range (delegates to
        tracking.eta_accuracy)."""
        assert self.state_handlers is not None
        return await self.state_handlers.get_eta_accuracy(request)

    # --- search, geofences, watching: delegate to tracking.fleet_api ----------------------
    #: Search, geofence and watch handlers (tracking/fleet_api.py), set by ``components``.
    fleet_handlers: FleetHandlers | None = None

    def _fleet(self) -> FleetHandlers:
        assert self.fleet_handlers is not None
        return self.fleet_handlers

    async def SearchDrivers(
        self, request: fleet_service_pb2.SearchDriversRequest, context: Any
    ) -> fleet_service_pb2.SearchDriversResponse:
        """Drivers inside a circle, rectangle, polygon or isochrone, nearest first."""
        return await self._fleet().search_drivers(request)

    async def GetTrackingIntervals(
        self, request: fleet_service_pb2.GetTrackingIntervalsRequest, context: Any
    ) -> fleet_service_pb2.GetTrackingIntervalsResponse:
        """The tenant's capture and upload intervals in force."""
        return await self._fleet().get_tracking_intervals(request)

    async def UpdateTrackingIntervals(
        self, request: fleet_service_pb2.UpdateTrackingIntervalsRequest, context: Any
    ) -> fleet_service_pb2.UpdateTrackingIntervalsResponse:
        """Set the tenant's intervals; connected apps get them within seconds."""
        return await self._fleet().update_tracking_intervals(request)

    async def CreateGeofence(
        self, request: fleet_service_pb2.CreateGeofenceRequest, context: Any
    ) -> fleet_service_pb2.CreateGeofenceResponse:
        """Register a geofence."""
        return await self._fleet().create_geofence(request)

    async def GetGeofence(
        self, request: fleet_service_pb2.GetGeofenceRequest, context: Any
    ) -> fleet_service_pb2.GetGeofenceResponse:
        """One geofence by id."""
        return await self._fleet().get_geofence(request)

    async def ListGeofences(
        self, request: fleet_service_pb2.ListGeofencesRequest, context: Any
    ) -> fleet_service_pb2.ListGeofencesResponse:
        """A page of geofences, optionally of one order."""
        return await self._fleet().list_geofences(request)

    async def DeleteGeofence(
        self, request: fleet_service_pb2.DeleteGeofenceRequest, context: Any
    ) -> fleet_service_pb2.DeleteGeofenceResponse:
        """Remove a geofence."""
        return await self._fleet().delete_geofence(request)

    async def WatchFleet(
        self, request: fleet_service_pb2.WatchFleetRequest, context: Any
    ) -> AsyncIterator[fleet_service_pb2.WatchFleetResponse]:
        """Live driver states: a snapshot, then coalesced changes; ends on cancel."""
        async for message in self._fleet().watch_fleet(request):
            yield message

    async def WatchGeofenceEvents(
        self, request: fleet_service_pb2.WatchGeofenceEventsRequest, context: Any
    ) -> AsyncIterator[fleet_service_pb2.WatchGeofenceEventsResponse]:
        """Geofence transitions after a cursor, then live; ends on cancel."""
        async for message in self._fleet().watch_geofence_events(request):
            yield message


def components(
    state_handlers: FleetStateHandlers | None = None,
    fleet_handlers: FleetHandlers | None = None,
    customer: CustomerTracking | None = None,
) -> list[Servicer]:
    """Both servicers as host components."""
    Tracking.customer = customer
    Fleet.state_handlers = state_handlers
    Fleet.fleet_handlers = fleet_handlers
    return [
        Servicer(
            Tracking(),
            tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server,
            tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name,
        ),
        Servicer(
            Fleet(),
            fleet_service_pb2_grpc.add_FleetServiceServicer_to_server,
            fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
        ),
    ]
