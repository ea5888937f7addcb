"""A driver's proof of delivery: a small JPEG photo with EXIF time and GPS, uploaded straight
to object storage through the pre-signed POST form from ``CreateUploadUrl``, then confirmed
with ``ConfirmProof`` (which delivers the order)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import random
import urllib.request
import uuid
from fractions import Fraction

import piexif
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.pod.v1 import (
    ConfirmProofRequest,
    CreateUploadUrlRequest,
    ProofKind,
    ProofOfDeliveryServiceStub,
)
from PIL import Image

from core.geo import LatLng

CONTENT_TYPE = "image/jpeg"
UPLOAD_TIMEOUT_S = 30.0


def _rational(value: float) -> tuple[int, int]:
    fraction = Fraction(value).limit_denominator(1_000_000)
    return fraction.numerator, fraction.denominator


def _dms(value: float) -> tuple[tuple[int, int], ...]:
    """Degrees, minutes, seconds as EXIF rationals."""
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (degrees, 1), (minutes, 1), _rational(seconds)


def photo(position: LatLng, taken_at: dt.datetime, rng: random.Random) -> bytes:
    """A 64x48 JPEG (a random colour: each photo hashes differently) with EXIF
    DateTimeOriginal in UTC and the GPS position."""
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    image = Image.new("RGB", (64, 48), colour)
    utc = taken_at.astimezone(dt.UTC)
    exif = {
        "Exif": {
            piexif.ExifIFD.DateTimeOriginal: utc.strftime("%Y:%m:%d %H:%M:%S").encode(),
            piexif.ExifIFD.OffsetTimeOriginal: b"+00:00",
        },
        "GPS": {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if position.lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(position.lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if position.lng >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(position.lng),
        },
    }
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80, exif=piexif.dump(exif))
    return buffer.getvalue()


def _multipart(fields: dict[str, str], data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body: the form fields, then the file (S3 wants it last)."""
    boundary = "sim" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    head = "".join(parts).encode()
    file_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="proof.jpg"\r\n'
        f"Content-Type: {CONTENT_TYPE}\r\n\r\n"
    ).encode()
    body = head + file_head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post(url: str, fields: dict[str, str], data: bytes) -> None:
    body, content_type = _multipart(fields, data)
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=UPLOAD_TIMEOUT_S) as response:
        response.read()


async def deliver_with_photo(
    pod: ProofOfDeliveryServiceStub, order_id: str, position: LatLng, rng: random.Random
) -> str:
    """Take, upload and confirm a photo proof at ``position``; returns the proof id."""
    taken_at = dt.datetime.now(dt.UTC)
    data = photo(position, taken_at, rng)
    upload = await pod.create_upload_url(
        CreateUploadUrlRequest(
            order_id=order_id,
            kind=ProofKind.PHOTO,
            content_type=CONTENT_TYPE,
            content_length=len(data),
        )
    )
    await asyncio.to_thread(_post, upload.upload_url, dict(upload.form_fields), data)
    confirmed = await pod.confirm_proof(
        ConfirmProofRequest(
            order_id=order_id,
            kind=ProofKind.PHOTO,
            object_key=upload.object_key,
            sha256=hashlib.sha256(data).hexdigest(),
            captured_at=taken_at,
            position=LatLngMessage(lat=position.lat, lng=position.lng),
        )
    )
    return str(confirmed.proof.proof_id)
