"""The integrator's path of docs/integrating.md, run as written against the platform: a
service token from ``lastmile token``, then ``clients/python/examples/place_and_track.py``
through the edge (order placed, retried with its key, followed on the customer's stream)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import uuid

import asyncpg
import grpc
import pytest
from lastmile.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from core.auth import Role, verify_token
from tests.integration.conftest import REPO, Platform

pytestmark = pytest.mark.integration
EXAMPLE = REPO / "clients" / "python" / "examples" / "place_and_track.py"
RUN_TIMEOUT_S = 60


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def _token(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "ops", "token", *args], platform.settings.to_env())


def _example(platform: Platform, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(EXAMPLE), "--edge", platform.edge_address, *args]
    return _run(argv, {"LASTMILE_API_TOKEN": token})


def _placed(output: str) -> tuple[str, str]:
    """(order id, tracking token) the example printed."""
    order = re.search(r"^order (ord_\w+): ", output, re.MULTILINE)
    link = re.search(r"^tracking page: \S+/track/#token=(\S+)$", output, re.MULTILINE)
    assert order and link, output
    return order[1], link[1]


async def _get_tracking(platform: Platform, tracking_token: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(platform.addresses["tracking"]) as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        try:
            await stub.GetTracking(
                tracking_service_pb2.GetTrackingRequest(tracking_token=tracking_token),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_lastmile_token_signs_for_the_deployment_and_refuses_nonsense(
    platform: Platform,
) -> None:
    made = _token(platform, "service", "--tenant", "acme", "--subject", "shop", "--ttl-s", "90")
    assert made.returncode == 0, made.stderr
    principal = verify_token(platform.settings, made.stdout.strip())
    assert (principal.subject, principal.role, principal.tenant_id) == (
        "shop",
        Role.SERVICE,
        "acme",
    )
    # The test platform runs on the development key: the command says so.
    assert "development key" in made.stderr
    for wrong in (
        ["admin", "--tenant", "acme", "--subject", "s"],
        ["service", "--tenant", " ", "--subject", "s"],
        ["service", "--tenant", "acme", "--subject", ""],
        ["service", "--tenant", "acme", "--subject", "s", "--ttl-s", "0"],
    ):
        refused = _token(platform, *wrong)
        assert refused.returncode == 2 and refused.stdout == "", (wrong, refused)


async def test_the_example_places_an_order_and_follows_it(platform: Platform) -> None:
    tenant = f"example-{uuid.uuid4().hex[:8]}"
    made = _token(platform, "service", "--tenant", tenant, "--subject", "shop-backend")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    key = f"key-{uuid.uuid4().hex}"
    by = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0).isoformat()
    args = ["--ref", "shop-42", "--key", key, "--by", by, "--seconds", "3"]

    first = await asyncio.to_thread(_example, platform, token, *args)
    assert first.returncode == 0, first.stderr
    order_id, link = _placed(first.stdout)
    assert re.search(r"^snapshot: \w+, \d+ steps$", first.stdout, re.MULTILINE), first.stdout
    db = await asyncpg.connect(platform.settings.database_url)
    try:
        rows = await db.fetch(
            "SELECT order_id, external_ref FROM orders WHERE tenant_id = $1", tenant
        )
        assert [(r["order_id"], r["external_ref"]) for r in rows] == [(order_id, "shop-42")]

        # The backend retries with the same key: the same order, a new link, the old one
        # revoked.
        again = await asyncio.to_thread(_example, platform, token, *args)
        assert again.returncode == 0, again.stderr
        assert _placed(again.stdout)[0] == order_id
        new_link = _placed(again.stdout)[1]
        assert await db.fetchval("SELECT count(*) FROM orders WHERE tenant_id = $1", tenant) == 1
    finally:
        await db.close()
    assert await _get_tracking(platform, new_link) == grpc.StatusCode.OK
    # Only the newest link's digest is kept: the replaced one is unknown now.
    assert await _get_tracking(platform, link) == grpc.StatusCode.NOT_FOUND


async def test_the_example_reports_a_wrong_token_and_places_nothing(platform: Platform) -> None:
    wrong = await asyncio.to_thread(_example, platform, "not-a-token", "--seconds", "1")
    assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stderr, wrong
    assert "order " not in wrong.stdout
