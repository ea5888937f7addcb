"""ProofOfDeliveryService."""

from __future__ import annotations

from lastmile.pod.v1 import pod_service_pb2, pod_service_pb2_grpc

from core.runtime import Servicer


class ProofOfDelivery(pod_service_pb2_grpc.ProofOfDeliveryServiceServicer):
    """Upload URLs, proof confirmation, proof retrieval, review queue."""


def component() -> Servicer:
    """The servicer as a host component."""
    return Servicer(
        ProofOfDelivery(),  # type: ignore[abstract]
        pod_service_pb2_grpc.add_ProofOfDeliveryServiceServicer_to_server,
        pod_service_pb2.DESCRIPTOR.services_by_name["ProofOfDeliveryService"].full_name,
    )
