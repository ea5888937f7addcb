"""CreateUploadUrl: a pre-signed POST for one proof object of the calling driver's order.

The object key names the order, the attempt and the kind, plus a random part so a new form
never overwrites an earlier upload: ``proofs/{order_id}/{attempt}/{kind}-{16 hex}.{ext}``.
The store itself enforces the form (key, content type, size range, signature, expiry), so
photo bytes never pass through this service.
"""

from __future__ import annotations

import asyncio
import re
import secrets

from lastmile.pod.v1 import pod_pb2, pod_service_pb2

from core.auth import Principal
from core.errors import InvalidArgument
from pod import order_access
from pod.checks import IMAGE_TYPES
from pod.context import PodContext, now
from pod.records import kind_name, timestamp

#: Kinds that have an object (contactless-QR proofs have none).
OBJECT_KINDS = frozenset({pod_pb2.PROOF_KIND_PHOTO, pod_pb2.PROOF_KIND_SIGNATURE})
KEY_PATTERN = re.compile(
    r"^proofs/(?P<order>[^/]+)/(?P<attempt>\d+)/(?P<kind>[a-z_]+)-[0-9a-f]{16}\.(?P<ext>[a-z]+)$"
)


def object_key(order_id: str, attempt: int, kind: int, content_type: str) -> str:
    """A fresh key for one proof object."""
    ext = IMAGE_TYPES[content_type]
    return f"proofs/{order_id}/{attempt}/{kind_name(kind).lower()}-{secrets.token_hex(8)}.{ext}"


def check_request(request: pod_service_pb2.CreateUploadUrlRequest, max_bytes: int) -> None:
    """INVALID_ARGUMENT for a kind without an object, a non-image type or a bad size."""
    if not request.order_id:
        raise InvalidArgument("order_id is required")
    if request.kind not in OBJECT_KINDS:
        raise InvalidArgument("kind must be PHOTO or SIGNATURE (QR proofs upload nothing)")
    if request.content_type not in IMAGE_TYPES:
        raise InvalidArgument(f"content_type must be one of {', '.join(sorted(IMAGE_TYPES))}")
    if not 1 <= request.content_length <= max_bytes:
        raise InvalidArgument(f"content_length must be between 1 and {max_bytes} bytes")


async def create_upload_url(
    ctx: PodContext, principal: Principal, request: pod_service_pb2.CreateUploadUrlRequest
) -> pod_service_pb2.CreateUploadUrlResponse:
    """CreateUploadUrl: see the contract. The form admits at most ``content_length`` bytes."""
    check_request(request, ctx.settings.pod_upload_max_bytes)
    async with ctx.database.pool.acquire() as conn:
        found = await order_access.fetch_order(conn, request.order_id)
    order = order_access.drivers_order(found, principal, request.order_id)
    order_access.require_deliverable(order)
    key = object_key(order.order_id, order.attempt, request.kind, request.content_type)
    expires_at = now() + ctx.upload_expiry
    url, fields = await asyncio.to_thread(
        ctx.objects.upload_form,
        key,
        request.content_type,
        request.content_length,
        ctx.upload_expiry,
    )
    return pod_service_pb2.CreateUploadUrlResponse(
        upload_url=url,
        form_fields=fields,
        object_key=key,
        expires_at=timestamp(expires_at),
        max_bytes=request.content_length,
    )
