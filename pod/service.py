"""ProofOfDeliveryService: each RPC checks the caller's role and hands over to its use case
(pod.uploads, pod.confirm, pod.retrieval)."""

from __future__ import annotations

from typing import Any

from grpc import aio
from lastmile.pod.v1 import pod_service_pb2, pod_service_pb2_grpc

from core.auth import Role, current_principal, require
from core.runtime import Servicer
from pod.confirm import confirm_proof
from pod.context import PodContext
from pod.retrieval import get_proof, list_flagged
from pod.uploads import create_upload_url

Context = aio.ServicerContext[Any, Any]


class ProofOfDelivery(pod_service_pb2_grpc.ProofOfDeliveryServiceServicer):
    """Upload URLs, proof confirmation, proof retrieval, review queue."""

    def __init__(self, ctx: PodContext) -> None:
        self._ctx = ctx

    async def CreateUploadUrl(
        self, request: pod_service_pb2.CreateUploadUrlRequest, context: Context
    ) -> pod_service_pb2.CreateUploadUrlResponse:
        """A pre-signed upload for the calling driver's order."""
        return await create_upload_url(self._ctx, require(Role.DRIVER), request)

    async def ConfirmProof(
        self, request: pod_service_pb2.ConfirmProofRequest, context: Context
    ) -> pod_service_pb2.ConfirmProofResponse:
        """Check and record a proof; the order is delivered through the outbox."""
        proof = await confirm_proof(self._ctx, require(Role.DRIVER), request)
        return pod_service_pb2.ConfirmProofResponse(proof=proof)

    async def GetProof(
        self, request: pod_service_pb2.GetProofRequest, context: Context
    ) -> pod_service_pb2.GetProofResponse:
        """A proof and a short-lived download URL, for the customer or a dispatcher."""
        return await get_proof(self._ctx, current_principal(), request)

    async def ListFlaggedProofs(
        self, request: pod_service_pb2.ListFlaggedProofsRequest, context: Context
    ) -> pod_service_pb2.ListFlaggedProofsResponse:
        """The dispatcher's review queue."""
        return await list_flagged(self._ctx, require(Role.DISPATCHER), request)


def component(ctx: PodContext) -> Servicer:
    """The servicer as a host component."""
    return Servicer(
        ProofOfDelivery(ctx),
        pod_service_pb2_grpc.add_ProofOfDeliveryServiceServicer_to_server,
        pod_service_pb2.DESCRIPTOR.services_by_name["ProofOfDeliveryService"].full_name,
    )
