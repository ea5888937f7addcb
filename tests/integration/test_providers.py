"""Areas, origins and external providers end to end: a real dispatch process, two simulated
providers (webhook and polling, real HTTP servers), and a 50/50 split between them that is
deterministic and explained; bad areas get their statuses."""

from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.dispatch.v1 import dispatch_service_pb2 as dpb
from lastmile.origin.v1 import origin_pb2
from lastmile.origin.v1 import origin_service_pb2 as opb

from dispatch import rules
from ops.servers import ManagedProcess, PostgresServer, RedisServer, free_port
from tests.helpers import wait_until
from tests.integration.orders_support import (
    VALLETTA,
    Client,
    Dispatch,
    new_tenant,
    own_postgres_db,
    own_redis_db,
    start_dispatch,
)

pytestmark = pytest.mark.integration
SECRET = "test-provider-secret"
S = common_pb2
# Around Valletta and Floriana.
AREA = [(35.885, 14.495), (35.905, 14.495), (35.905, 14.525), (35.885, 14.525)]


@dataclass
class Providers:
    dispatch: Dispatch
    webhook_url: str
    polling_url: str


def _simulator(port: int, log_dir: Path, name: str) -> ManagedProcess:
    command = [sys.executable, "-m", "dispatch.providers.simulator", "--port", str(port)]
    command += ["--secret", SECRET, "--tick", "0.2"]
    process = ManagedProcess(name, command, log_path=log_dir / f"{name}.log")
    process.start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: urllib.request.urlopen(url + "/health", timeout=1).status == 200, 30)
    return process


@pytest.fixture(scope="module")
def providers(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int
) -> Iterator[Providers]:
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-providers-"))
    ports = free_port(), free_port()
    sims = [_simulator(p, data_dir, f"sim-{p}") for p in ports]
    dispatch = start_dispatch(
        own_postgres_db(postgres_server, f"dispatch_test_{redis_db}"),
        own_redis_db(redis_server.url, redis_db),
        data_dir,
        provider_callback_secret=SECRET,
        provider_poll_interval_s=0.2,
    )
    try:
        yield Providers(dispatch, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    finally:
        dispatch.process.stop(grace=10.0)
        log = (data_dir / "dispatch.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        for sim in sims:
            sim.stop(grace=5.0)
        shutil.rmtree(data_dir, ignore_errors=True)


def _polygon(points: list[tuple[float, float]]) -> S.Polygon:
    return S.Polygon(vertices=[S.LatLng(lat=a, lng=b) for a, b in points])


def _area(
    client: Client,
    rules_: list[dispatch_pb2.ProviderRule],
    points: list[tuple[float, float]] = AREA,
) -> dpb.UpsertAreaRequest:
    area_id = f"valletta-{client.tenant}"
    area = dispatch_pb2.Area(area_id=area_id, name="Valletta", boundary=_polygon(points))
    area.rules.extend(rules_)
    return dpb.UpsertAreaRequest(area=area)


def _rule(
    provider: str, share: int, priority: int = 1, fallback: str = ""
) -> dispatch_pb2.ProviderRule:
    fleet = dispatch_pb2.FLEET_KIND_EXTERNAL if provider else dispatch_pb2.FLEET_KIND_INTERNAL
    return dispatch_pb2.ProviderRule(
        priority=priority,
        fleet=fleet,
        provider_id=provider,
        share_percent=share,
        fallback_provider_id=fallback,
    )


def _register(client: Client, pid: str, url: str, transport: Any, enabled: bool = True) -> None:
    provider = dispatch_pb2.Provider(
        provider_id=pid, name=pid, transport=transport, endpoint_url=url, enabled=enabled
    )
    client.admin.UpsertProvider(dpb.UpsertProviderRequest(provider=provider), metadata=client.md)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code()  # type: ignore[no-any-return]


@pytest.fixture
def tenant(providers: Providers) -> Iterator[tuple[Client, str, str]]:
    """A tenant with a webhook and a polling provider splitting Valletta 50/50."""
    client = Client(providers.dispatch, new_tenant())
    suffix = client.tenant[-8:]
    hook, poll = f"hook-{suffix}", f"poll-{suffix}"
    _register(client, hook, providers.webhook_url, dispatch_pb2.PROVIDER_TRANSPORT_WEBHOOK)
    _register(client, poll, providers.polling_url, dispatch_pb2.PROVIDER_TRANSPORT_POLLING)
    yield client, hook, poll
    client.close()


def test_bad_areas_are_refused(tenant: tuple[Client, str, str]) -> None:
    client, hook, poll = tenant
    upsert = client.admin.UpsertArea
    bowtie = [(35.885, 14.495), (35.905, 14.525), (35.905, 14.495), (35.885, 14.525)]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert (
        _code(lambda: upsert(_area(client, [_rule(hook, 100)], bowtie), metadata=client.md))
        == invalid
    )
    assert (
        _code(lambda: upsert(_area(client, [_rule(hook, 100)], AREA[:2]), metadata=client.md))
        == invalid
    )
    shares = [_rule(hook, 50), _rule(poll, 40)]
    assert _code(lambda: upsert(_area(client, shares), metadata=client.md)) == invalid
    unknown = [_rule("nobody", 100)]
    assert _code(lambda: upsert(_area(client, unknown), metadata=client.md)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    missing = dpb.GetAreaRequest(area_id=f"valletta-{client.tenant}")
    assert _code(lambda: client.admin.GetArea(missing, metadata=client.md)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_split_across_two_providers_is_deterministic_and_delivered(
    tenant: tuple[Client, str, str],
) -> None:
    client, hook, poll = tenant
    client.admin.UpsertArea(_area(client, [_rule(hook, 50), _rule(poll, 50)]), metadata=client.md)
    origin = origin_pb2.Origin(origin_id=f"o-{client.tenant}", name="Bakery")
    origin.address.location.lat, origin.address.location.lng = VALLETTA
    tagged = client.origins.UpsertOrigin(opb.UpsertOriginRequest(origin=origin), metadata=client.md)
    assert tagged.origin.area_id == f"valletta-{client.tenant}"
    seen: dict[str, list[str]] = {hook: [], poll: []}
    while not (seen[hook] and seen[poll]):  # each order is a fair coin: ends quickly
        created = client.create(origin_id=origin.origin_id)
        split = created.split
        expected = hook if rules.bucket(created.order.order_id) < 50 else poll
        assert (split.provider_id, split.area_id) == (expected, f"valletta-{client.tenant}")
        assert f"bucket {rules.bucket(created.order.order_id)}" in split.explanation
        seen[expected].append(created.order.order_id)
        assert len(seen[hook]) + len(seen[poll]) < 60
    for provider_id, order_ids in seen.items():
        for order_id in order_ids:
            wait_until(
                lambda: client.get(order_id).status == S.ORDER_STATUS_DELIVERED,  # noqa: B023
                20,
                what=f"{order_id} delivered by {provider_id}",
            )
            events = client.events(order_id)
            steps = [e.to_status for e in events if e.from_status != e.to_status]
            assert steps == [
                S.ORDER_STATUS_PENDING,
                S.ORDER_STATUS_ASSIGNED,
                S.ORDER_STATUS_TO_PICKUP,
                S.ORDER_STATUS_AT_PICKUP,
                S.ORDER_STATUS_PICKED_UP,
                S.ORDER_STATUS_DELIVERED,
            ]
            assert events[-1].actor == f"provider:{provider_id}"


def test_disabled_or_unreachable_provider_falls_back(tenant: tuple[Client, str, str]) -> None:
    client, hook, poll = tenant
    down = f"down-{client.tenant[-8:]}"
    _register(
        client, down, f"http://127.0.0.1:{free_port()}", dispatch_pb2.PROVIDER_TRANSPORT_WEBHOOK
    )
    # Everything to the unreachable provider, falling back to the polling one.
    client.admin.UpsertArea(_area(client, [_rule(down, 100, fallback=poll)]), metadata=client.md)
    created = client.create()
    assert created.split.provider_id == down
    wait_until(lambda: client.get(created.order.order_id).provider_id == poll, 20)
    refused = [
        e for e in client.events(created.order.order_id) if e.event_type == "provider_refused"
    ]
    assert len(refused) == 1 and f"fallback -> provider {poll}" in refused[0].details_json
    # A disabled provider is skipped at creation, with the reason in the explanation.
    _register(client, hook, "http://127.0.0.1:1", dispatch_pb2.PROVIDER_TRANSPORT_WEBHOOK, False)
    client.admin.UpsertArea(_area(client, [_rule(hook, 100, fallback=poll)]), metadata=client.md)
    fallback = client.create().split
    assert fallback.provider_id == poll
    assert f"provider {hook} unavailable; fallback -> provider {poll}" in fallback.explanation
