"""The real servers of the stack start and do their basic job."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from ops.servers import PostgresServer, RedisServer, SeaweedS3

pytestmark = pytest.mark.integration


async def test_redis_answers_ping_and_keeps_a_stream(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        first = await client.xadd("test:pings", {"driver": "d1", "seq": "1"})
        await client.xadd("test:pings", {"driver": "d1", "seq": "2"})
        entries = await client.xrange("test:pings")
    finally:
        await client.aclose()
    assert entries is not None
    assert entries[0][0] == first
    assert [fields[b"seq"] for _, fields in entries if fields] == [b"1", b"2"]


async def test_postgres_accepts_the_application_role(postgres_server: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("select current_user") == "lastmile"
    finally:
        await connection.close()


async def test_postgres_rejects_a_wrong_password(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.dsn.replace("lastmile:lastmile@", "lastmile:nope@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


def _http(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_presigned_urls_round_trip_and_are_checked(s3_server: SeaweedS3) -> None:
    s3_server.ensure_bucket("proofs")
    s3_server.ensure_bucket("proofs")  # idempotent
    client = s3_server.client()
    put_url = client.presigned_put_object("proofs", "o1/photo.jpg", expires=timedelta(minutes=5))
    photo = b"\xff\xd8\xff\xe0 not really a jpeg"

    status, _ = _http(put_url, "PUT", photo)
    assert status == 200

    get_url = client.presigned_get_object("proofs", "o1/photo.jpg", expires=timedelta(minutes=5))
    assert _http(get_url) == (200, photo)

    # Same signature, another key: the signature covers the path.
    tampered = put_url.replace("o1/photo.jpg", "o2/photo.jpg")
    status, _ = _http(tampered, "PUT", b"forged")
    assert status == 403
    assert _http(get_url) == (200, photo)
