"""TrackingService (customers) and FleetService (dispatchers)."""

from __future__ import annotations

from lastmile.tracking.v1 import (
    fleet_service_pb2,
    fleet_service_pb2_grpc,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)

from core.runtime import Servicer


class Tracking(tracking_service_pb2_grpc.TrackingServiceServicer):
    """Customer tracking by token (Track stream, GetTracking polling twin)."""


class Fleet(fleet_service_pb2_grpc.FleetServiceServicer):
    """Fleet view, driver search, geofences, driver paths."""


def components() -> list[Servicer]:
    """Both servicers as host components."""
    return [
        Servicer(
            Tracking(),  # type: ignore[abstract]
            tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server,
            tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name,
        ),
        Servicer(
            Fleet(),  # type: ignore[abstract]
            fleet_service_pb2_grpc.add_FleetServiceServicer_to_server,
            fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
        ),
    ]
