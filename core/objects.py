"""The one object-storage adapter (S3 API through the minio SDK): proof photos and
signatures go straight from the driver app to the bucket through pre-signed URLs."""

from __future__ import annotations

import asyncio
import datetime as dt

import urllib3
from minio import Minio
from minio.datatypes import PostPolicy

from core.settings import Settings

#: Retries of a failed S3 call (connection errors and 5xx answers).
S3_RETRIES = 3


def s3_client(settings: Settings) -> Minio:
    """A client of the configured S3 endpoint; each call has a connect and a read timeout
    (``s3_timeout_s``) and a few retries, so a hung store fails the call instead of holding it."""
    timeout = urllib3.Timeout(connect=settings.s3_timeout_s, read=settings.s3_timeout_s)
    http = urllib3.PoolManager(
        timeout=timeout,
        maxsize=10,
        retries=urllib3.Retry(
            total=S3_RETRIES, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
        ),
    )
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http,
    )


class ObjectStore:
    """The proof bucket. The SDK is blocking, so calls run in a worker thread."""

    service_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.proof_bucket
        self.client = s3_client(settings)
        scheme = "https" if settings.s3_secure else "http"
        self.bucket_url = f"{scheme}://{settings.s3_endpoint}/{settings.proof_bucket}"

    def register(self, server: object) -> None:
        """No servicer; present for the Component protocol."""

    async def start(self) -> None:
        """Check the store answers and the bucket exists."""
        await asyncio.to_thread(self._ensure_bucket)

    async def stop(self) -> None:
        """Nothing to close: the SDK keeps no connections we own."""

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def upload_url(self, key: str, expires: dt.timedelta) -> str:
        """A pre-signed PUT URL for one key (signing is local: no network call)."""
        return self.client.presigned_put_object(self.bucket, key, expires=expires)

    def upload_form(
        self, key: str, content_type: str, max_bytes: int, expires: dt.timedelta
    ) -> tuple[str, dict[str, str]]:
        """A pre-signed POST (url, form fields) limited to one key, type and size range."""
        policy = PostPolicy(self.bucket, dt.datetime.now(dt.UTC) + expires)
        policy.add_equals_condition("key", key)
        policy.add_equals_condition("Content-Type", content_type)
        policy.add_content_length_range_condition(1, max_bytes)
        fields = self.client.presigned_post_policy(policy)
        return self.bucket_url, {**fields, "key": key, "Content-Type": content_type}

    def download_url(self, key: str, expires: dt.timedelta) -> str:
        """A pre-signed GET URL for one key."""
        return self.client.presigned_get_object(self.bucket, key, expires=expires)
