"""ConfirmProof: check an uploaded proof, store its record, and announce it so dispatch
delivers the order.

Flow: validate the request; the order must be the calling driver's; a proof already recorded
for this attempt answers a retry (same kind, key and hash) with the same record and refuses
anything else (ALREADY_EXISTS); the order must be PICKED_UP or NEARBY; the object is read once
from the store and checked (hash, image, EXIF), or the delivery code is verified for QR; the
policy rejects the proof or accepts it, maybe flagged. The record and an outbox row
(topic ``PROOF_EVENTS``, key = order id, payload = the Proof) are written in ONE transaction;
dispatch's relay and consumer move the order to DELIVERED. Every refusal happens before that
transaction, so nothing is stored half-way.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2, pod_service_pb2

from core import topics
from core.auth import Principal, delivery_code_matches
from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from core.geo import LatLng
from core.inputs import check_position, client_datetime
from pod import checks as chk
from pod import order_access, proof_metrics
from pod.context import PodContext, now
from pod.evidence import examine, read_object
from pod.order_access import OrderView
from pod.records import checks_json, kind_name, proof_message, record_hash, timestamp
from pod.uploads import KEY_PATTERN, OBJECT_KINDS

MAX_SIGNER_NAME = 200
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EXTENSION_TYPES = {ext: ctype for ctype, ext in chk.IMAGE_TYPES.items()}
Request = pod_service_pb2.ConfirmProofRequest


def check_request(request: Request) -> None:
    """INVALID_ARGUMENT for anything missing or malformed, before any I/O."""
    if not request.order_id:
        raise InvalidArgument("order_id is required")
    if request.kind not in pod_pb2.ProofKind.values() or request.kind == 0:
        raise InvalidArgument("kind must be PHOTO, SIGNATURE or CONTACTLESS_QR")
    if not request.HasField("captured_at"):
        raise InvalidArgument("captured_at is required")
    client_datetime(request.captured_at, "captured_at")
    if not request.HasField("position"):
        raise InvalidArgument("position is required")
    check_position(request.position.lat, request.position.lng, "position")
    if request.kind in OBJECT_KINDS:
        if not request.object_key:
            raise InvalidArgument("object_key is required for photos and signatures")
        if not _SHA256.match(request.sha256.lower()):
            raise InvalidArgument("sha256 must be 64 hex digits")
    elif request.object_key or request.sha256:
        raise InvalidArgument("contactless QR proofs carry no object_key or sha256")
    elif not request.qr_code:
        raise InvalidArgument("qr_code is required for contactless QR proofs")
    if request.kind == pod_pb2.PROOF_KIND_SIGNATURE:
        if not request.signer_name.strip():
            raise InvalidArgument("signer_name is required for signatures")
        if len(request.signer_name) > MAX_SIGNER_NAME:
            raise InvalidArgument(f"signer_name is longer than {MAX_SIGNER_NAME} characters")


def check_key(key: str, order: OrderView, kind: int) -> str:
    """The key's content type, if the key was issued for this order, attempt and kind:
    PERMISSION_DENIED for another order's key, INVALID_ARGUMENT for any other mismatch."""
    match = KEY_PATTERN.match(key)
    if match is None or match["ext"] not in _EXTENSION_TYPES:
        raise InvalidArgument(f"object_key {key!r} was not issued by CreateUploadUrl")
    if match["order"] != order.order_id:
        raise PermissionDenied("object_key belongs to another order")
    if int(match["attempt"]) != order.attempt:
        raise InvalidArgument(
            f"object_key is for attempt {match['attempt']}; the order is at attempt"
            f" {order.attempt}: upload again"
        )
    if match["kind"] != kind_name(kind).lower():
        raise InvalidArgument(
            f"object_key is for a {match['kind']}, not a {kind_name(kind).lower()}"
        )
    return _EXTENSION_TYPES[match["ext"]]


def replay_or_refuse(row: Mapping[str, Any], request: Request) -> pod_pb2.Proof:
    """The recorded proof for a retry of the same confirmation; ALREADY_EXISTS otherwise."""
    same = (
        row["kind"] == request.kind
        and row["object_key"] == request.object_key
        and row["sha256"] == request.sha256.lower()
    )
    if not same:
        raise AlreadyExists(
            f"order {row['order_id']!r} attempt {row['attempt']} already has proof"
            f" {row['proof_id']} ({kind_name(row['kind'])}, sha256 {row['sha256'] or '-'});"
            " a different proof is refused"
        )
    return proof_message(row)


async def _attempt_proof(conn: Any, order_id: str, attempt: int) -> Mapping[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM proofs WHERE order_id = $1 AND attempt = $2 ORDER BY confirmed_at LIMIT 1",
        order_id,
        attempt,
    )
    return dict(row) if row else None


async def _gather_checks(
    ctx: PodContext, order: OrderView, request: Request
) -> tuple[list[chk.Check], bytes]:
    """Every check of the proof, and the object bytes (empty for QR); raises for hard
    failures."""
    captured_at = request.captured_at.ToDatetime(tzinfo=now().tzinfo)
    position = LatLng(lat=request.position.lat, lng=request.position.lng)
    positions = [position]
    checks: list[chk.Check] = []
    data = b""
    if request.kind in OBJECT_KINDS:
        key_type = check_key(request.object_key, order, request.kind)
        stored = await read_object(
            ctx.objects, request.object_key, ctx.settings.pod_upload_max_bytes
        )
        if stored.content_type != key_type:
            raise InvalidArgument(
                f"object was uploaded as {stored.content_type}, key says {key_type}"
            )
        want_exif = request.kind == pod_pb2.PROOF_KIND_PHOTO
        exif = await asyncio.to_thread(examine, stored, request.sha256.lower(), want_exif)
        data = stored.data
        checks += [
            chk.Check("object_exists", True, f"{len(data)} bytes, {stored.content_type}"),
            chk.Check("sha256", True),
            chk.Check("content_is_image", True),
        ]
        if want_exif:
            checks += chk.photo_checks(exif, captured_at, position, ctx.limits)
            if exif is not None and exif.position is not None:
                positions.append(exif.position)
        else:
            checks.append(chk.Check("signer_name", True))
    else:
        secret = ctx.settings.delivery_code_secret
        if not delivery_code_matches(
            secret, order.order_id, request.qr_code, order.delivery_code_digest
        ):
            raise InvalidArgument("qr_code is not this order's delivery code")
        checks.append(chk.Check("qr_code", True))
    checks.append(chk.address_check(positions, order.drop_off, ctx.limits))
    checks.append(chk.capture_time_check(captured_at, now(), ctx.limits))
    return checks, data


def _build_proof(
    order: OrderView, request: Request, checks: list[chk.Check], flagged: bool, data: bytes
) -> pod_pb2.Proof:
    proof = pod_pb2.Proof(
        proof_id="prf_" + uuid.uuid4().hex,
        order_id=order.order_id,
        driver_id=order.driver_id,
        kind=request.kind,
        object_key=request.object_key,
        sha256=request.sha256.lower(),
        captured_at=timestamp(request.captured_at.ToDatetime(tzinfo=now().tzinfo)),
        position=common_pb2.LatLng(lat=request.position.lat, lng=request.position.lng),
        signer_name=request.signer_name.strip(),
        checks=[pod_pb2.ProofCheck(name=c.name, passed=c.passed, detail=c.detail) for c in checks],
        flagged=flagged,
        confirmed_at=timestamp(now()),
        attempt=order.attempt,
    )
    proof.record_hash = record_hash(proof, data)
    return proof


async def confirm_proof(ctx: PodContext, principal: Principal, request: Request) -> pod_pb2.Proof:
    """ConfirmProof: see the module docstring and the contract."""
    check_request(request)
    async with ctx.database.pool.acquire() as conn:
        order = order_access.drivers_order(
            await order_access.fetch_order(conn, request.order_id), principal, request.order_id
        )
        existing = await _attempt_proof(conn, order.order_id, order.attempt)
    if existing is not None:  # a retry answers fast, without reading the object again
        return replay_or_refuse(existing, request)
    order_access.require_deliverable(order)
    checks, data = await _gather_checks(ctx, order, request)
    verdict = chk.decide(checks, ctx.policies)
    proof_metrics.observe(checks, verdict)
    if verdict.rejected:
        raise FailedPrecondition("proof rejected by policy: " + "; ".join(verdict.reasons))
    proof = await asyncio.to_thread(_build_proof, order, request, checks, verdict.flagged, data)
    return await _store(ctx, principal, order, request, proof, checks)


async def _store(
    ctx: PodContext,
    principal: Principal,
    order: OrderView,
    request: Request,
    proof: pod_pb2.Proof,
    checks: list[chk.Check],
) -> pod_pb2.Proof:
    """Record and outbox row in one transaction, serialized per order by an advisory lock;
    the order and the attempt's proofs are read again under the lock (a concurrent confirm
    or a status change since the checks wins)."""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"lastmile:proof:{order.order_id}",
        )
        existing = await _attempt_proof(conn, order.order_id, order.attempt)
        if existing is not None:
            return replay_or_refuse(existing, request)
        current = order_access.drivers_order(
            await order_access.fetch_order(conn, order.order_id), principal, order.order_id
        )
        if current.attempt != order.attempt:
            raise FailedPrecondition(f"order moved to attempt {current.attempt} meanwhile")
        order_access.require_deliverable(current)
        row = await conn.fetchrow(
            "INSERT INTO proofs (proof_id, order_id, driver_id, attempt, kind, object_key,"
            " sha256, captured_at, lat, lng, signer_name, checks, flagged, record_hash,"
            " confirmed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " $14, $15) RETURNING *",
            proof.proof_id,
            proof.order_id,
            proof.driver_id,
            proof.attempt,
            proof.kind,
            proof.object_key,
            proof.sha256,
            proof.captured_at.ToDatetime(tzinfo=now().tzinfo),
            proof.position.lat,
            proof.position.lng,
            proof.signer_name,
            checks_json(checks),
            proof.flagged,
            proof.record_hash,
            proof.confirmed_at.ToDatetime(tzinfo=now().tzinfo),
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        stored = proof_message(row)
        await conn.execute(
            "INSERT INTO outbox (topic, key, payload, tenant_id) VALUES ($1, $2, $3, $4)",
            topics.PROOF_EVENTS,
            order.order_id,
            stored.SerializeToString(),
            order.tenant_id,
        )
    return stored
