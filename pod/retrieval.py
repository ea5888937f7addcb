"""GetProof (the order's customer or a dispatcher of its tenant) and ListFlaggedProofs (the
dispatchers' review queue, newest first, keyset-paged).

Who sees what: a tracking token that is not the order's live link gets PERMISSION_DENIED,
as do drivers and origins; a caller with no credential at all gets UNAUTHENTICATED. Customers
cannot tell an unknown order from another customer's (PERMISSION_DENIED for both);
dispatchers get NOT_FOUND for orders and proofs their tenant does not have.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
from typing import Any

from lastmile.pod.v1 import pod_service_pb2

from core.auth import Principal, Role
from core.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from pod import order_access
from pod.context import PodContext, now
from pod.order_access import OrderView
from pod.records import proof_message, timestamp

_DENIED = "not allowed to see this proof"


def _check_caller(principal: Principal | None, tracking_token: str) -> None:
    """Refuse callers who may see no proof at all before the request is looked at."""
    if tracking_token:
        return
    if principal is None:
        raise Unauthenticated("GetProof needs a dispatcher token or the order's tracking token")
    if principal.role is not Role.DISPATCHER:
        raise PermissionDenied(_DENIED)


def _authorize(
    order: OrderView | None,
    principal: Principal | None,
    tracking_token: str,
    not_found: str,
) -> OrderView:
    if tracking_token:
        if order is None or not order_access.customer_may_see(order, tracking_token, now()):
            raise PermissionDenied(_DENIED)
        return order
    if principal is None:
        raise Unauthenticated("GetProof needs a dispatcher token or the order's tracking token")
    if principal.role is not Role.DISPATCHER:
        raise PermissionDenied(_DENIED)
    if order is None or order.tenant_id != principal.tenant_id:
        raise NotFound(not_found)
    return order


async def get_proof(
    ctx: PodContext, principal: Principal | None, request: pod_service_pb2.GetProofRequest
) -> pod_service_pb2.GetProofResponse:
    """GetProof by proof id, or the latest proof of an order; see the module docstring."""
    _check_caller(principal, request.tracking_token)
    which = request.WhichOneof("key")
    if which is None or not getattr(request, which):
        raise InvalidArgument("proof_id or order_id is required")
    async with ctx.database.pool.acquire() as conn:
        if which == "proof_id":
            row = await conn.fetchrow("SELECT * FROM proofs WHERE proof_id = $1", request.proof_id)
            order_id = row["order_id"] if row else ""
            missing = f"proof {request.proof_id!r} not found"
        else:
            order_id = request.order_id
            row = await conn.fetchrow(
                "SELECT * FROM proofs WHERE order_id = $1"
                " ORDER BY confirmed_at DESC, proof_id DESC LIMIT 1",
                order_id,
            )
            missing = f"order {order_id!r} not found"
        order = await order_access.fetch_order(conn, order_id) if order_id else None
    _authorize(order, principal, request.tracking_token, missing)
    if row is None:
        raise NotFound(f"order {order_id!r} has no proof yet")
    proof = proof_message(row)
    response = pod_service_pb2.GetProofResponse(proof=proof)
    if proof.object_key:
        expires_at = now() + ctx.download_expiry
        response.download_url = await asyncio.to_thread(
            ctx.objects.download_url, proof.object_key, ctx.download_expiry
        )
        response.download_url_expires_at.CopyFrom(timestamp(expires_at))
    return response


def _page_size(ctx: PodContext, requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    if requested == 0:
        return ctx.settings.pod_page_size_default
    return min(requested, ctx.settings.pod_page_size_max)


def _encode_token(confirmed_at: dt.datetime, proof_id: str) -> str:
    raw = json.dumps([confirmed_at.isoformat(), proof_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[dt.datetime, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, proof_id = json.loads(raw)
        return dt.datetime.fromisoformat(at), str(proof_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidArgument("page_token is not valid") from exc


async def list_flagged(
    ctx: PodContext, principal: Principal, request: pod_service_pb2.ListFlaggedProofsRequest
) -> pod_service_pb2.ListFlaggedProofsResponse:
    """ListFlaggedProofs: the tenant's flagged proofs, newest first."""
    size = _page_size(ctx, request.page_size)
    after = _decode_token(request.page_token)
    args: list[Any] = [principal.tenant_id, size + 1]
    keyset = ""
    if after is not None:
        args += list(after)
        keyset = " AND (p.confirmed_at, p.proof_id) < ($3, $4)"
    async with ctx.database.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.* FROM proofs p JOIN orders o ON o.order_id = p.order_id"
            f" WHERE p.flagged AND o.tenant_id = $1{keyset}"
            " ORDER BY p.confirmed_at DESC, p.proof_id DESC LIMIT $2",
            *args,
        )
    page = rows[:size]
    token = (
        _encode_token(page[-1]["confirmed_at"], page[-1]["proof_id"]) if len(rows) > size else ""
    )
    return pod_service_pb2.ListFlaggedProofsResponse(
        proofs=[proof_message(r) for r in page], next_page_token=token
    )
