"""Test setup for proof-of-delivery tests and the pod benchmark (setup only).

``seed_order`` inserts a driver and an order already PICKED_UP by that driver straight into
PostgreSQL: the order lifecycle RPCs that would get it there (create, assign, driver stop
events through the gateway) are another team's and not all wired yet. The delivery-code
digest comes from dispatch's own function, so the tests also prove pod verifies codes the
way dispatch stores them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2, pod_service_pb2

from core.auth import delivery_code_digest, new_tracking_token, tracking_token_digest
from core.geo import LatLng
from core.settings import Settings
from tests.pod_images import photo_jpeg

DOOR = LatLng(lat=35.8989, lng=14.5146)  # a Valletta drop-off
PICKUP = LatLng(lat=35.8920, lng=14.5050)


@dataclass(frozen=True, slots=True)
class SeededOrder:
    """An order in the database and the secrets only its creator knows."""

    order_id: str
    tenant_id: str
    driver_id: str
    tracking_token: str
    delivery_code: str


async def seed_order(
    conn: Any,
    settings: Settings,
    tenant_id: str,
    driver_id: str,
    status: int = common_pb2.ORDER_STATUS_PICKED_UP,
    drop_off: LatLng = DOOR,
) -> SeededOrder:
    """Insert (driver and) an order assigned to ``driver_id`` in ``status``."""
    await conn.execute(
        "INSERT INTO drivers (driver_id, tenant_id, name) VALUES ($1, $2, $3)"
        " ON CONFLICT (driver_id) DO NOTHING",
        driver_id,
        tenant_id,
        f"Driver {driver_id}",
    )
    order_id = "ord_" + uuid.uuid4().hex
    token, code = new_tracking_token(), f"{secrets.randbelow(10**6):06d}"
    address = json.dumps({"line1": "Republic Street 1", "city": "Valletta"})
    await conn.execute(
        "INSERT INTO orders (order_id, tenant_id, idempotency_key, request_digest, kind, status,"
        " pickup_address, pickup_lat, pickup_lng, drop_off_address, drop_off_lat, drop_off_lng,"
        " driver_id, tracking_token_digest, delivery_code_digest)"
        " VALUES ($1, $2, $3, 'seed', 1, $4, $5, $6, $7, $5, $8, $9, $10, $11, $12)",
        order_id,
        tenant_id,
        order_id,
        status,
        address,
        PICKUP.lat,
        PICKUP.lng,
        drop_off.lat,
        drop_off.lng,
        driver_id,
        tracking_token_digest(token),
        delivery_code_digest(settings.delivery_code_secret, order_id, code),
    )
    return SeededOrder(order_id, tenant_id, driver_id, token, code)


def multipart(fields: Mapping[str, str], data: bytes, file_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body: the form fields, then the file (S3 wants it last)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="proof"\r\n'
        f"Content-Type: {file_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_form(
    url: str, fields: Mapping[str, str], data: bytes, file_type: str
) -> tuple[int, bytes]:
    """POST a pre-signed form as a driver app would: (HTTP status, body)."""
    body, content_type = multipart(fields, data, file_type)
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_get(url: str) -> tuple[int, bytes]:
    """GET a pre-signed URL: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def sha256_hex(data: bytes) -> str:
    """What the driver app computes before confirming."""
    return hashlib.sha256(data).hexdigest()


def confirm_photo_proof(
    pod: Any,
    metadata: Any,
    order_id: str,
    door: LatLng,
    taken: dt.datetime,
    timeout: float,
) -> bytes:
    """The driver's whole photo proof through a grpcio ProofOfDelivery client: a real JPEG
    taken at ``door`` uploaded to the pre-signed form, then ConfirmProof. Returns the photo."""
    photo = photo_jpeg(taken, door.lat, door.lng)
    form = pod.CreateUploadUrl(
        pod_service_pb2.CreateUploadUrlRequest(
            order_id=order_id,
            kind=pod_pb2.PROOF_KIND_PHOTO,
            content_type="image/jpeg",
            content_length=len(photo),
        ),
        metadata=metadata,
        timeout=timeout,
    )
    status, body = post_form(form.upload_url, dict(form.form_fields), photo, "image/jpeg")
    assert status in (200, 201, 204), body
    request = pod_service_pb2.ConfirmProofRequest(
        order_id=order_id,
        kind=pod_pb2.PROOF_KIND_PHOTO,
        object_key=form.object_key,
        sha256=sha256_hex(photo),
        position=common_pb2.LatLng(lat=door.lat, lng=door.lng),
    )
    request.captured_at.FromDatetime(taken)
    pod.ConfirmProof(request, metadata=metadata, timeout=timeout)
    return photo
