"""Session-wide real servers for the tests: PostgreSQL, Redis, SeaweedFS S3 and the road graph.

Each server gets free loopback ports and its own directory and is stopped when the session
ends, so tests can run next to a developer's ``lastmile up`` stack.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import pytest

from core.roads import RoadNetwork
from ops.graph import build_graph
from ops.servers import PostgresServer, RedisServer, SeaweedS3, free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CITY_PBF = REPO / "maps" / "malta.osm.pbf"
# Reused across sessions; the build's marker rebuilds it when the map or OSRM changes.
GRAPH_CACHE = REPO / ".lastmile" / "test-cache" / "graph"
S3_ACCESS_KEY = "lastmile-test"
S3_SECRET_KEY = "lastmile-test-secret"
# Enough Redis databases for one per test module that needs its own (see RedisDatabases).
REDIS_DATABASES = 64


class Startable(Protocol):
    """What :func:`running` needs of a server."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@contextmanager
def running[S: Startable](server: S) -> Iterator[S]:
    """``server`` started, and stopped (by PID) however the block ends."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def temporary_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster with the ``lastmile`` role and database, in a directory of
    its own that is removed afterwards."""
    # Not under pytest's tmp dir: that one is root-only (0700) and the server runs as the
    # postgres user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="lastmile-test-pg-"))
    try:
        with running(PostgresServer(base / "data", free_port())) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster with the ``lastmile`` role and database."""
    with temporary_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """An in-memory Redis with :data:`REDIS_DATABASES` databases."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port(), databases=REDIS_DATABASES)
    with running(server) as started:
        yield started


class RedisDatabases:
    """Hands out the session Redis's databases 1.., each once.

    A module that flushes its database, or runs processes with consumer groups (which would
    take each other's events), needs one no other module touches. Numbers picked by hand
    collided once: a module flushed the hardening platform's database under it. Database 0
    stays shared by the modules that only use keys of their own."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._next = 1

    def take(self) -> int:
        """A database number no one else got."""
        if self._next >= self._count:
            raise RuntimeError(f"all {self._count} Redis databases are taken: raise the count")
        self._next += 1
        return self._next - 1


@pytest.fixture(scope="session")
def redis_databases(redis_server: RedisServer) -> RedisDatabases:
    """The session's database allocator."""
    return RedisDatabases(redis_server.databases)


@pytest.fixture(scope="module")
def redis_db(redis_databases: RedisDatabases) -> int:
    """A Redis database of this test module's own."""
    return redis_databases.take()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 gateway with one admin identity and no buckets."""
    server = SeaweedS3(tmp_path_factory.mktemp("s3"), free_port(), S3_ACCESS_KEY, S3_SECRET_KEY)
    with running(server) as started:
        yield started


@pytest.fixture(scope="session")
def road_graph() -> Path:
    """The ``.osrm`` base path of the default city's graph."""
    return build_graph(DEFAULT_CITY_PBF, GRAPH_CACHE)


@pytest.fixture(scope="session")
def roads(road_graph: Path) -> RoadNetwork:
    """The road network of the default city."""
    return RoadNetwork(road_graph)
