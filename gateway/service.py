"""DriverGatewayService: one bidirectional stream per connected driver app."""

from __future__ import annotations

from lastmile.driver.v1 import driver_service_pb2, driver_service_pb2_grpc

from core.runtime import Servicer

FULL_NAME = driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"].full_name


class DriverGateway(driver_service_pb2_grpc.DriverGatewayServiceServicer):
    """Validates and enqueues driver events, pushes commands down (Connect lands with the live
    tracking issue; until then the generated base answers UNIMPLEMENTED)."""


def component() -> Servicer:
    """The gateway servicer as a host component."""
    return Servicer(
        DriverGateway(),  # type: ignore[abstract]
        driver_service_pb2_grpc.add_DriverGatewayServiceServicer_to_server,
        FULL_NAME,
    )
