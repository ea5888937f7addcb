"""The proof bucket's pre-signed POST forms and GET URLs, checked by a real SeaweedFS."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator, Mapping

import pytest
from minio.error import S3Error
from PIL import Image

from core.objects import ObjectStore
from core.settings import Settings
from ops.servers import SeaweedS3
from tests.integration.pod_support import http_get, post_form

pytestmark = [
    pytest.mark.integration,
    # minio signs POST policies with datetime.utcnow(), deprecated in Python 3.12.
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),
]

MAX_BYTES = 64 * 1024
EXPIRES = dt.timedelta(minutes=5)


@pytest.fixture
async def store(s3_server: SeaweedS3) -> AsyncIterator[ObjectStore]:
    """An object store on its own bucket (created by ``start``)."""
    settings = Settings.from_env({}).replace(
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        proof_bucket=f"proofs-{uuid.uuid4().hex[:8]}",
    )
    objects = ObjectStore(settings)
    await objects.start()
    await objects.start()  # finding the bucket there already is fine
    assert objects.client.bucket_exists(objects.bucket)
    yield objects
    await objects.stop()


def _jpeg(size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


def _post(
    url: str, fields: Mapping[str, str], data: bytes, file_type: str = "image/jpeg"
) -> tuple[int, bytes]:
    return post_form(url, fields, data, file_type)


def _exists(store: ObjectStore, key: str) -> bool:
    try:
        store.client.stat_object(store.bucket, key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return False
        raise
    return True


def test_upload_form_accepts_the_right_image_and_download_url_returns_it(
    store: ObjectStore,
) -> None:
    photo = _jpeg()
    assert len(photo) <= MAX_BYTES
    url, fields = store.upload_form("o-1/photo.jpg", "image/jpeg", MAX_BYTES, EXPIRES)
    assert url == store.bucket_url

    status, body = _post(url, fields, photo)

    assert status in (200, 201, 204), body
    stat = store.client.stat_object(store.bucket, "o-1/photo.jpg")
    assert stat.size == len(photo)
    assert stat.content_type == "image/jpeg"
    assert http_get(store.download_url("o-1/photo.jpg", EXPIRES)) == (200, photo)


def test_upload_form_refuses_another_content_type(store: ObjectStore) -> None:
    url, fields = store.upload_form("o-2/photo.jpg", "image/jpeg", MAX_BYTES, EXPIRES)
    status, body = _post(url, {**fields, "Content-Type": "image/png"}, _jpeg(), "image/png")
    assert status == 403
    assert b"Policy Condition failed" in body
    assert not _exists(store, "o-2/photo.jpg")


def test_upload_form_refuses_an_oversize_body(store: ObjectStore) -> None:
    url, fields = store.upload_form("o-3/photo.jpg", "image/jpeg", 1024, EXPIRES)
    big = _jpeg((512, 512))
    assert len(big) > 1024
    status, body = _post(url, fields, big)
    assert status == 400
    assert b"EntityTooLarge" in body
    assert not _exists(store, "o-3/photo.jpg")


def test_upload_form_refuses_an_empty_body(store: ObjectStore) -> None:
    url, fields = store.upload_form("o-4/photo.jpg", "image/jpeg", MAX_BYTES, EXPIRES)
    status, body = _post(url, fields, b"")
    assert status == 400
    assert b"EntityTooSmall" in body
    assert not _exists(store, "o-4/photo.jpg")


def test_upload_form_is_bound_to_its_key(store: ObjectStore) -> None:
    url, fields = store.upload_form("o-5/photo.jpg", "image/jpeg", MAX_BYTES, EXPIRES)
    status, _ = _post(url, {**fields, "key": "o-6/photo.jpg"}, _jpeg())
    assert status == 403
    assert not _exists(store, "o-6/photo.jpg")


def test_upload_form_refuses_a_forged_signature_and_an_expired_policy(store: ObjectStore) -> None:
    url, fields = store.upload_form("o-7/photo.jpg", "image/jpeg", MAX_BYTES, EXPIRES)
    status, body = _post(url, {**fields, "x-amz-signature": "0" * 64}, _jpeg())
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True)

    url, fields = store.upload_form(
        "o-7/photo.jpg", "image/jpeg", MAX_BYTES, dt.timedelta(seconds=-60)
    )
    status, body = _post(url, fields, _jpeg())
    assert (status, b"Policy expired" in body) == (403, True)
    assert not _exists(store, "o-7/photo.jpg")


def test_download_url_is_checked(store: ObjectStore) -> None:
    store.client.put_object(store.bucket, "o-8/sig.png", io.BytesIO(b"sig"), 3)
    url = store.download_url("o-8/sig.png", EXPIRES)
    assert http_get(url) == (200, b"sig")
    status, _ = http_get(url.replace("o-8/sig.png", "o-9/sig.png"))
    assert status == 403
