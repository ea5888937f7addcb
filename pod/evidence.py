"""Reading a proof object back from the store and examining its bytes: SHA-256, image
integrity, EXIF. The object is read once; the same bytes serve every check and the record
hash."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import urllib3
from minio.error import S3Error
from PIL import Image

from core.errors import FailedPrecondition, InvalidArgument, Unavailable
from core.objects import ObjectStore
from pod.checks import IMAGE_TYPES, Exif, NotAnImage, load_image, read_exif

_MISSING = frozenset({"NoSuchKey", "NoSuchObject"})


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's bytes and the content type it was uploaded with."""

    data: bytes
    content_type: str


def _read(objects: ObjectStore, key: str, max_bytes: int) -> StoredObject:
    try:
        response = objects.client.get_object(objects.bucket, key)
    except S3Error as exc:
        if exc.code in _MISSING:
            raise FailedPrecondition(f"object {key!r} not uploaded: upload it first") from exc
        raise Unavailable(f"object store refused to read {key!r}: {exc.code}") from exc
    try:
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise InvalidArgument(f"object {key!r} is larger than {max_bytes} bytes")
        data = response.read()
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
    finally:
        response.close()
        response.release_conn()
    return StoredObject(data, content_type)


async def read_object(objects: ObjectStore, key: str, max_bytes: int) -> StoredObject:
    """The object's bytes; FAILED_PRECONDITION when it was never uploaded (confirm before
    upload, or an upload the store refused: expired or tampered form)."""
    try:
        return await asyncio.to_thread(_read, objects, key, max_bytes)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Unavailable(f"object store unreachable: {exc}") from exc


def examine(stored: StoredObject, sha256: str, want_exif: bool) -> Exif | None:
    """Hard checks on the bytes (INVALID_ARGUMENT: hash mismatch, not an image, a type that
    disagrees with the bytes); returns the EXIF when ``want_exif``. CPU-bound: run it in a
    worker thread (hashlib and Pillow release the GIL on large buffers)."""
    actual = hashlib.sha256(stored.data).hexdigest()
    if actual != sha256:
        raise InvalidArgument(f"sha256 mismatch: the object hashes to {actual}, not {sha256}")
    if stored.content_type not in IMAGE_TYPES:
        raise InvalidArgument(f"object content type {stored.content_type!r} is not an image type")
    try:
        image: Image.Image = load_image(stored.data, stored.content_type)
    except NotAnImage as exc:
        raise InvalidArgument(str(exc)) from exc
    with image:
        return read_exif(image) if want_exif else None
