"""The servers a benchmark starts for itself: PostgreSQL and Redis in a temporary directory on
free loopback ports, the city's road graph, and settings pointing at them."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings
from ops.graph import build_graph
from ops.servers import PostgresServer, RedisServer
from ops.servers.process import free_port

GRAPH_CACHE = PROJECT_ROOT / ".lastmile" / "test-cache" / "graph"


@dataclass(frozen=True)
class OwnServers:
    """A benchmark's own servers; ``settings`` point at them, with the gateway and tracking on
    free ports, no metrics port and WARNING logs."""

    base: Path
    postgres: PostgresServer
    redis: RedisServer
    settings: Settings


@contextlib.contextmanager
def own_servers(prefix: str) -> Iterator[OwnServers]:
    """Start them; on exit stop them and remove the directory."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)  # PostgreSQL runs as its own user
    postgres = PostgresServer(base / "pg" / "data", free_port())
    redis = RedisServer(base / "redis", free_port())
    try:
        postgres.start()
        redis.start()
        graph = build_graph(PROJECT_ROOT / "maps" / "malta.osm.pbf", GRAPH_CACHE)
        settings = Settings.from_env({}).replace(
            gateway_port=free_port(),
            tracking_port=free_port(),
            metrics_port=0,
            data_dir=base,
            database_url=postgres.dsn,
            redis_url=redis.url,
            graph_dir=graph.parent,
            log_level="WARNING",
        )
        yield OwnServers(base, postgres, redis, settings)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
