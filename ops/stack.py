"""The local platform: every real server and service process on loopback, started in order and
stopped in reverse. Used by ``lastmile up`` and by the integration tests."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from core.settings import Settings
from ops import health
from ops.graph import build_graph
from ops.servers.envoy import EdgeOptions, EnvoyServer, render_envoy_config, validate_config
from ops.servers.postgres import PostgresServer
from ops.servers.process import ManagedProcess, ServerError
from ops.servers.redis import RedisServer
from ops.servers.s3 import SeaweedS3

SERVICES = ("gateway", "tracking", "dispatch", "pod")
Progress = Callable[[str], None]


class Server(Protocol):
    """What the stack needs of each real server."""

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self, grace: float = ...) -> None: ...


@dataclass
class Component:
    """One started piece of the stack, for the status table."""

    name: str
    address: str
    stop: Callable[[], None]
    pid: Callable[[], int | None]


def service_process(
    name: str, settings: Settings, log_dir: Path, metrics_port: int = 0
) -> ManagedProcess:
    """The process of one service (``python -m <name>``) configured by ``settings``."""
    env = settings.replace(metrics_port=metrics_port).to_env()
    return ManagedProcess(
        name, [sys.executable, "-m", name], log_path=log_dir / f"{name}.log", env=env
    )


def start_service(process: ManagedProcess, address: str, timeout: float = 60.0) -> None:
    """Start a service and wait until its health check says SERVING."""
    process.start()
    process.wait_ready(lambda: health.is_serving(address), timeout=timeout)


def edge_config(settings: Settings, path: Path, web: bool = False) -> Path:
    """Write and validate the Envoy config routing the edge to the services (and, with
    ``web``, every other path to the browser apps' server on ``settings.web_port``)."""
    upstreams = {name: settings.port_of(name) for name in SERVICES}
    options = EdgeOptions(
        web_port=settings.web_port if web else None,
        max_request_bytes=settings.edge_max_request_bytes,
        web_max_request_bytes=settings.edge_web_max_request_bytes,
    )
    origins = settings.edge_allowed_origins.split(",")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_envoy_config(
            settings.edge_port, settings.edge_admin_port, upstreams, origins, options=options
        )
    )
    validate_config(path)
    return path


def web_process(settings: Settings, log_dir: Path) -> ManagedProcess:
    """The browser apps' server (``python -m ops.web``) configured by ``settings``."""
    return ManagedProcess(
        "web",
        [sys.executable, "-m", "ops.web"],
        log_path=log_dir / "web.log",
        env=settings.to_env(),
    )


def web_is_ready(settings: Settings) -> bool:
    """Whether the web server answers its health check (roads loaded)."""
    url = f"http://{settings.host}:{settings.web_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"{url!r} names no port")
    return port


@dataclass
class LocalStack:
    """Everything ``lastmile up`` runs, with data under ``data_dir``."""

    settings: Settings
    data_dir: Path
    progress: Progress = print
    components: list[Component] = field(default_factory=list)

    def start(self, services: Sequence[str] = SERVICES) -> None:
        """Start servers, build the graph, start services and the edge; stop all on failure."""
        try:
            self._start_servers()
            self._build_graph()
            self._start_services(services)
            self._start_web()
            self._start_edge()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything started, last first."""
        while self.components:
            component = self.components.pop()
            self.progress(f"stopping {component.name}")
            try:
                component.stop()
            except ServerError as exc:
                self.progress(f"  {component.name} did not stop cleanly: {exc}")

    def _add_server(self, name: str, server: Server, address: str) -> None:
        started = time.monotonic()
        self.progress(f"starting {name} on {address}")
        server.start()
        self.components.append(Component(name, address, server.stop, lambda: server.pid))
        self.progress(f"  {name} ready in {time.monotonic() - started:.1f}s")

    def _start_servers(self) -> None:
        s = self.settings
        pg_port, redis_port = _port(s.database_url), _port(s.redis_url)
        s3_port = _port("http://" + s.s3_endpoint)
        self._add_server(
            "postgresql",
            PostgresServer(self.data_dir / "postgres" / "data", pg_port),
            f"127.0.0.1:{pg_port}",
        )
        self._add_server(
            "redis",
            RedisServer(self.data_dir / "redis", redis_port, persistent=True),
            f"127.0.0.1:{redis_port}",
        )
        s3 = SeaweedS3(self.data_dir / "s3", s3_port, s.s3_access_key, s.s3_secret_key)
        self._add_server("s3 (seaweedfs)", s3, s.s3_endpoint)
        s3.ensure_bucket(s.proof_bucket)

    def _build_graph(self) -> None:
        self.progress(f"road graph from {self.settings.osm_pbf}")
        started = time.monotonic()
        build_graph(
            self.settings.osm_pbf, self.settings.graph_dir, lambda m: self.progress("  " + m)
        )
        self.progress(f"  graph ready in {time.monotonic() - started:.1f}s")

    def _start_services(self, services: Sequence[str]) -> None:
        for index, name in enumerate(services):
            address = f"{self.settings.host}:{self.settings.port_of(name)}"
            metrics = self.settings.metrics_port + index if self.settings.metrics_port else 0
            process = service_process(name, self.settings, self.data_dir / "logs", metrics)
            self.progress(f"starting {name} on {address}")
            start_service(process, address)
            self.components.append(_process_component(name, address, process))

    def _start_web(self) -> None:
        s = self.settings
        address = f"{s.host}:{s.web_port}"
        process = web_process(s, self.data_dir / "logs")
        self.progress(f"starting web (apps, roads) on {address}")
        process.start()
        process.wait_ready(lambda: web_is_ready(s), timeout=60.0)
        self.components.append(_process_component("web", address, process))

    def _start_edge(self) -> None:
        s = self.settings
        config = edge_config(s, self.data_dir / "envoy" / "envoy.yaml", web=True)
        edge = EnvoyServer(config, s.edge_admin_port, log_path=self.data_dir / "logs" / "envoy.log")
        self._add_server("envoy edge", edge, f"{s.host}:{s.edge_port}")


def _process_component(name: str, address: str, process: ManagedProcess) -> Component:
    def stop() -> None:
        process.stop(grace=15.0)

    return Component(name, address, stop, lambda: process.pid)
