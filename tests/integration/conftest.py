"""The whole platform for integration tests: the four service processes and the Envoy edge,
on free loopback ports, talking to the session's PostgreSQL, Redis and SeaweedFS."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.bus import Bus
from core.settings import Settings
from ops import health
from ops.servers import EnvoyServer, ManagedProcess, PostgresServer, RedisServer, SeaweedS3
from ops.servers.process import free_port
from ops.stack import SERVICES, edge_config, service_process
from tests.integration.orders_support import own_redis_db

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CITY_PBF = REPO / "maps" / "malta.osm.pbf"
# The service that serves Prometheus metrics in the platform fixture.
METRICS_SERVICE = "dispatch"
START_TIMEOUT_S = 60.0


@dataclass
class Platform:
    """A running platform: where each piece listens and where it logs."""

    settings: Settings
    addresses: dict[str, str]
    edge_address: str
    log_dir: Path
    metrics_url: str
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    edge: EnvoyServer | None = None

    @property
    def edge_url(self) -> str:
        """Base URL of the edge for grpc-web clients."""
        return f"http://{self.edge_address}"

    def log_of(self, service: str) -> str:
        """Everything ``service`` has logged so far."""
        return (self.log_dir / f"{service}.log").read_text(errors="replace")


def platform_settings(
    postgres: PostgresServer, redis: RedisServer, s3: SeaweedS3, graph_dir: Path, data_dir: Path
) -> Settings:
    """Settings pointing at the session's servers, with free ports for every listener."""
    return Settings.from_env({}).replace(
        host="127.0.0.1",
        gateway_port=free_port(),
        tracking_port=free_port(),
        dispatch_port=free_port(),
        pod_port=free_port(),
        edge_port=free_port(),
        edge_admin_port=free_port(),
        metrics_port=0,
        data_dir=data_dir,
        database_url=postgres.dsn,
        redis_url=redis.url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        graph_dir=graph_dir,
        osm_pbf=DEFAULT_CITY_PBF,
        shutdown_grace_s=2.0,
        # The matcher and the wave schedule have their own tests; here they would compete
        # with tests that assign orders.
        instant_enabled=False,
        wave_interval_s=0.0,
    )


@contextmanager
def running_platform(settings: Settings, data_dir: Path, s3: SeaweedS3) -> Iterator[Platform]:
    """The four services and the edge on ``settings``, logging under ``data_dir``; stopped by
    PID at the end."""
    log_dir = data_dir / "logs"
    s3.ensure_bucket(settings.proof_bucket)
    metrics_port = free_port()
    addresses = {name: f"{settings.host}:{settings.port_of(name)}" for name in SERVICES}
    processes = {
        name: service_process(
            name, settings, log_dir, metrics_port if name == METRICS_SERVICE else 0
        )
        for name in SERVICES
    }
    edge: EnvoyServer | None = None
    try:
        # Started together and then awaited: the same as ops.stack.start_service, in parallel.
        for process in processes.values():
            process.start()
        for name, process in processes.items():
            address = addresses[name]
            process.wait_ready(functools.partial(health.is_serving, address), START_TIMEOUT_S)
        config = edge_config(settings, data_dir / "envoy" / "envoy.yaml")
        edge = EnvoyServer(config, settings.edge_admin_port, log_path=log_dir / "envoy.log")
        edge.start()
        yield Platform(
            settings=settings,
            addresses=addresses,
            edge_address=f"{settings.host}:{settings.edge_port}",
            log_dir=log_dir,
            metrics_url=f"http://{settings.host}:{metrics_port}/metrics",
            processes=processes,
            edge=edge,
        )
    finally:
        if edge is not None:
            edge.stop()
        for process in reversed(processes.values()):
            process.stop(grace=15.0)


@pytest.fixture(scope="session")
def platform(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    s3_server: SeaweedS3,
    road_graph: Path,
) -> Iterator[Platform]:
    """The four services and the edge, started once per session and stopped by PID."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-platform-"))
    settings = platform_settings(
        postgres_server, redis_server, s3_server, road_graph.parent, data_dir
    )
    try:
        with running_platform(settings, data_dir, s3_server) as running:
            yield running
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def private_settings(redis_server: RedisServer, redis_db: int) -> Settings:
    """Default settings on this module's own Redis database (the session's platform uses
    database 0: its consumers and leases stay out of the module's way)."""
    return Settings.from_env({}).replace(redis_url=own_redis_db(redis_server.url, redis_db))


@pytest.fixture
async def private_bus(private_settings: Settings) -> AsyncIterator[Bus]:
    """A started bus on this module's own Redis database, emptied first."""
    bus = Bus(private_settings)
    await bus.start()
    await bus.redis.flushdb()
    try:
        yield bus
    finally:
        await bus.stop()
