"""gRPC health checks of the platform's services, directly or through the Envoy edge."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_HEADER = "x-lastmile-service"


def check(
    address: str, service: str = "", via_edge_to: str | None = None, timeout: float = 2.0
) -> str:
    """The serving status name (SERVING, NOT_SERVING...) or the gRPC error code name.

    ``via_edge_to`` names the service behind the Envoy edge at ``address`` that should answer.
    """
    metadata = [(SERVICE_HEADER, via_edge_to)] if via_edge_to else None
    with grpc.insecure_channel(address) as channel:
        client = health_pb2_grpc.HealthStub(channel)
        try:
            reply = client.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout, metadata=metadata
            )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code.name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def is_serving(address: str, via_edge_to: str | None = None) -> bool:
    """Whether the process at ``address`` (or the named one behind the edge) is SERVING."""
    return check(address, via_edge_to=via_edge_to) == "SERVING"
