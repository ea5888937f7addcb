"""The platform of the hardening tests: the four services and the Envoy edge with small limits
(rates, stream caps, body sizes, a short link grace), every service serving Prometheus
metrics, on its own PostgreSQL database and Redis database so that no other module's
processes consume its streams or relay its outbox."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from ops import health
from ops.servers import EnvoyServer, ManagedProcess, PostgresServer, RedisServer, SeaweedS3
from ops.servers.process import free_port
from ops.stack import SERVICES, edge_config, service_process
from tests.conftest import RedisDatabases
from tests.integration.conftest import platform_settings
from tests.integration.orders_support import own_postgres_db, own_redis_db

START_TIMEOUT_S = 60.0
ALLOWED_ORIGIN = "https://dispatch.example.com"
EDGE_MAX_BYTES = 64 * 1024
# The limits under test, small enough to reach in a few calls.
LIMITS: dict[str, Any] = {
    "gateway_driver_rate_per_s": 0.01,
    "gateway_driver_burst": 8,
    "gateway_max_streams_per_driver": 1,
    "track_max_streams_per_token": 2,
    "track_token_rate_per_s": 0.01,
    "track_token_burst": 6,
    "track_token_check_s": 0.5,
    "tracking_token_grace_s": 3,
    "edge_allowed_origins": ALLOWED_ORIGIN,
    "edge_max_request_bytes": EDGE_MAX_BYTES,
}


@dataclass
class Hardened:
    """The running platform: addresses, settings, metrics URL of each service."""

    settings: Settings
    addresses: dict[str, str]
    metrics: dict[str, str]
    log_dir: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def edge_address(self) -> str:
        """host:port of the Envoy edge."""
        return f"{self.settings.host}:{self.settings.edge_port}"

    def log_of(self, service: str) -> str:
        """What ``service`` logged so far."""
        return (self.log_dir / f"{service}.log").read_text(errors="replace")


def hardened_settings(
    postgres: PostgresServer,
    redis: RedisServer,
    redis_db: int,
    s3: SeaweedS3,
    graph_dir: Path,
    data_dir: Path,
) -> Settings:
    """The platform's test settings (free ports), on this package's databases (Redis
    ``redis_db``), with fast polling and the small limits."""
    return platform_settings(postgres, redis, s3, graph_dir, data_dir).replace(
        database_url=own_postgres_db(postgres, "hardening"),
        redis_url=own_redis_db(redis.url, redis_db),
        outbox_poll_interval_s=0.05,
        order_consumer_block_ms=200,
        processor_block_ms=200,
        watch_block_ms=200,
        ops_metrics_interval_s=0.5,
        **LIMITS,
    )


@pytest.fixture(scope="session")
def hardened(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    redis_databases: RedisDatabases,
    s3_server: SeaweedS3,
    road_graph: Path,
) -> Iterator[Hardened]:
    """The platform, started once for the package and stopped by PID; no service may have
    logged a traceback by the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-hardening-"))
    settings = hardened_settings(
        postgres_server,
        redis_server,
        redis_databases.take(),
        s3_server,
        road_graph.parent,
        data_dir,
    )
    s3_server.ensure_bucket(settings.proof_bucket)
    log_dir = data_dir / "logs"
    metrics_ports = {name: free_port() for name in SERVICES}
    processes = {
        name: service_process(name, settings, log_dir, metrics_ports[name]) for name in SERVICES
    }
    addresses = {name: f"{settings.host}:{settings.port_of(name)}" for name in SERVICES}
    edge: EnvoyServer | None = None
    running = Hardened(
        settings=settings,
        addresses=addresses,
        metrics={n: f"http://{settings.host}:{p}/metrics" for n, p in metrics_ports.items()},
        log_dir=log_dir,
        processes=processes,
    )
    try:
        for process in processes.values():
            process.start()
        for name, process in processes.items():
            ready = functools.partial(health.is_serving, addresses[name])
            process.wait_ready(ready, START_TIMEOUT_S)
        config = edge_config(settings, data_dir / "envoy" / "envoy.yaml")
        edge = EnvoyServer(config, settings.edge_admin_port, log_path=log_dir / "envoy.log")
        edge.start()
        yield running
        for name in SERVICES:
            assert "Traceback" not in running.log_of(name), running.log_of(name)[-3000:]
    finally:
        if edge is not None:
            edge.stop()
        for process in reversed(processes.values()):
            process.stop(grace=15.0)
        shutil.rmtree(data_dir, ignore_errors=True)
