"""The four service processes answer health, reflection and RPCs (with their statuses), directly
and through the Envoy edge, over gRPC and grpc-web, and shut down gracefully."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import struct
import subprocess
import urllib.request
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from lastmile.dispatch.v1 import dispatch_service_pb2, order_service_pb2
from lastmile.driver.v1 import driver_service_pb2
from lastmile.integration.v1 import integration_service_pb2, integration_service_pb2_grpc
from lastmile.origin.v1 import origin_service_pb2
from lastmile.pod.v1 import pod_service_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_service_pb2
from lastmile_client.lastmile.integration.v1 import ListWebhooksRequest, WebhookServiceStub
from prometheus_client.parser import text_string_to_metric_families

from ops import health
from ops.servers import PostgresServer, free_port
from ops.stack import SERVICES, service_process, start_service
from tests.helpers import wait_until
from tests.integration.conftest import REPO, Platform

pytestmark = pytest.mark.integration

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
# Fully-qualified gRPC services each process registers.
SERVICE_NAMES: dict[str, set[str]] = {
    "gateway": {driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"].full_name},
    "tracking": {
        tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name,
        fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
    },
    "dispatch": {
        order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
        dispatch_service_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name,
        origin_service_pb2.DESCRIPTOR.services_by_name["OriginService"].full_name,
        integration_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    },
    "pod": {pod_service_pb2.DESCRIPTOR.services_by_name["ProofOfDeliveryService"].full_name},
}
SMOKE_JS = REPO / "clients" / "web" / "dist" / "smoke.js"
TABLES = (
    "orders",
    "order_events",
    "outbox",
    "drivers",
    "origins",
    "areas",
    "provider_rules",
    "routes",
    "route_stops",
    "proofs",
    "geofences",
    "location_history",
)


def _one_name(service: str) -> str:
    return sorted(SERVICE_NAMES[service])[0]


# --- health --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_health_serving_directly(platform: Platform, service: str) -> None:
    address = platform.addresses[service]
    assert health.check(address) == "SERVING"
    for name in SERVICE_NAMES[service]:
        assert health.check(address, service=name) == "SERVING"
    # A service another process owns is unknown here.
    other = next(s for s in SERVICES if s != service)
    assert health.check(address, service=_one_name(other)) == "NOT_FOUND"


@pytest.mark.parametrize("service", SERVICES)
def test_health_serving_through_the_edge(platform: Platform, service: str) -> None:
    edge = platform.edge_address
    assert health.check(edge, via_edge_to=service) == "SERVING"
    # Only the process named by the header knows its own services: proves the routing.
    assert health.check(edge, service=_one_name(service), via_edge_to=service) == "SERVING"
    other = next(s for s in SERVICES if s != service)
    assert health.check(edge, service=_one_name(other), via_edge_to=service) == "NOT_FOUND"


# --- grpc-web by hand ----------------------------------------------------------------------


def _grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    frames = []
    offset = 0
    while offset < len(body):
        assert len(body) - offset >= 5, f"truncated frame header in {body!r}"
        flag, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        assert len(payload) == length, f"truncated frame in {body!r}"
        frames.append((flag, payload))
        offset += 5 + length
    return frames


def _trailers(payload: bytes) -> dict[str, str]:
    trailers = {}
    for line in payload.decode().split("\r\n"):
        if line:
            key, _, value = line.partition(":")
            trailers[key.strip().lower()] = value.strip()
    return trailers


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_web_health_check_by_hand(platform: Platform, service: str) -> None:
    message = health_pb2.HealthCheckRequest(service=_one_name(service)).SerializeToString()
    request = urllib.request.Request(
        f"{platform.edge_url}/{HEALTH}/Check",
        data=struct.pack(">BI", 0, len(message)) + message,
        method="POST",
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            health.SERVICE_HEADER: service,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("application/grpc-web")
        body = response.read()

    frames = _grpc_web_frames(body)
    data = [payload for flag, payload in frames if flag == 0x00]
    trailer = [payload for flag, payload in frames if flag == 0x80]
    assert len(data) == 1 and len(trailer) == 1, frames
    reply = health_pb2.HealthCheckResponse.FromString(data[0])
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _trailers(trailer[0])["grpc-status"] == "0"


def test_typescript_grpc_web_client_through_the_edge(platform: Platform) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed for the grpc-web client test"
    assert SMOKE_JS.is_file(), f"{SMOKE_JS} is not built"
    result = subprocess.run(
        [node, str(SMOKE_JS), platform.edge_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["service"] == "lastmile.tracking.v1.TrackingService"
    assert report["method"] == "GetTracking"
    # The tracking service itself answered (an unknown token), not the edge or the transport.
    assert report["ok"] is False
    assert report["code"] in {"not_found", "unauthenticated"}
    assert report["message"]


# --- reflection ----------------------------------------------------------------------------


def _listed_services(address: str, via_edge_to: str | None = None) -> set[str]:
    metadata = [(health.SERVICE_HEADER, via_edge_to)] if via_edge_to else None
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata))
    assert len(replies) == 1
    return {s.name for s in replies[0].list_services_response.service}


@pytest.mark.parametrize("service", SERVICES)
def test_reflection_lists_the_services(platform: Platform, service: str) -> None:
    expected = SERVICE_NAMES[service] | {HEALTH, REFLECTION}
    assert _listed_services(platform.addresses[service]) == expected
    assert _listed_services(platform.edge_address, via_edge_to=service) == expected


# --- statuses through each client ------------------------------------------------------
# A refused call (ListWebhooks without a token) reaches each kind of generated client with its
# status and message, directly and through the edge. (UNIMPLEMENTED for RPCs without behaviour
# is covered by tests/unit/test_interceptor.py: every RPC of the contracts has one by now.)


@pytest.mark.parametrize("via_edge", [False, True], ids=["direct", "edge"])
def test_a_refused_rpc_with_the_grpcio_stub(platform: Platform, via_edge: bool) -> None:
    address = platform.edge_address if via_edge else platform.addresses["dispatch"]
    with grpc.insecure_channel(address) as channel:
        stub = integration_service_pb2_grpc.WebhookServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListWebhooks(integration_service_pb2.ListWebhooksRequest(), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "this call needs a token"


async def test_a_refused_rpc_with_the_betterproto_client(platform: Platform) -> None:
    channel = Channel("127.0.0.1", platform.settings.dispatch_port)
    try:
        with pytest.raises(GRPCError) as caught:
            await WebhookServiceStub(channel).list_webhooks(ListWebhooksRequest(), timeout=10)
    finally:
        channel.close()
    assert caught.value.status == Status.UNAUTHENTICATED
    assert caught.value.message == "this call needs a token"


# --- schema --------------------------------------------------------------------------------


async def test_services_applied_the_migrations(
    platform: Platform, postgres_server: PostgresServer
) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        missing = [
            t
            for t in TABLES
            if await conn.fetchval("SELECT to_regclass($1)", f"public.{t}") is None
        ]
        today = dt.datetime.now(dt.UTC).date()
        partition = f"public.location_history_{today:%Y%m%d}"
        has_partition = await conn.fetchval("SELECT to_regclass($1)", partition)
    finally:
        await conn.close()
    assert 1 in versions
    assert missing == []
    assert has_partition is not None


# --- shutdown and metrics ------------------------------------------------------------------


def test_sigterm_stops_a_service_gracefully(platform: Platform, tmp_path: Path) -> None:
    settings = platform.settings.replace(gateway_port=free_port())
    process = service_process("gateway", settings, tmp_path)
    try:
        start_service(process, f"{settings.host}:{settings.gateway_port}")
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        wait_until(
            lambda: process.returncode is not None,
            timeout=settings.shutdown_grace_s + 10,
            what="gateway exit after SIGTERM",
        )
        assert process.returncode == 0, process.log_tail()
        messages = []
        for line in process.log_path.read_text().splitlines():
            if line.startswith("{"):
                messages.append(json.loads(line)["msg"])
        assert "shutdown requested" in messages
        assert messages[-1] == "stopped"
    finally:
        process.stop(grace=5.0)


def _handled(url: str, method: str, code: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name != "lastmile_rpc_handled":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "lastmile_rpc_handled_total"
                and labels.get("method") == method
                and labels.get("code") == code
            ):
                return float(sample.value)
    return 0.0


def test_metrics_count_handled_rpcs(platform: Platform) -> None:
    before = _handled(platform.metrics_url, "ListWebhooks", "UNAUTHENTICATED")
    with grpc.insecure_channel(platform.addresses["dispatch"]) as channel:
        stub = integration_service_pb2_grpc.WebhookServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.ListWebhooks(integration_service_pb2.ListWebhooksRequest(), timeout=10)
    # The counter moves once the handler finished, which may be just after the client saw it.
    after = wait_until(
        lambda: _handled(platform.metrics_url, "ListWebhooks", "UNAUTHENTICATED") >= before + 1,
        timeout=5,
        what="lastmile_rpc_handled_total to count the call",
    )
    assert after
    assert _handled(platform.metrics_url, "ListWebhooks", "UNAUTHENTICATED") == before + 1
