"""Running a gRPC service process: one server, the interceptor chain, health, reflection,
metrics and an orderly shutdown.

Shutdown order: health NOT_SERVING, each component's optional ``drain()`` (the gateway ends its
driver streams with UNAVAILABLE so apps reconnect elsewhere), stop accepting and let open calls
drain for ``shutdown_grace_s``, then stop each component (flush buffers), then close pools. A second
SIGINT/SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Protocol

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from core import gc_tuning, logs
from core.interceptors import ServiceInterceptor
from core.metrics import serve_metrics
from core.settings import Settings

log = logging.getLogger(__name__)


class Component(Protocol):
    """One gRPC service (or a background worker) hosted by a process."""

    @property
    def service_names(self) -> Sequence[str]:
        """Fully-qualified gRPC service names it registers (empty for pure workers)."""

    def register(self, server: aio.Server) -> None:
        """Add its servicers to the server."""

    async def start(self) -> None:
        """Start background work; called before the server accepts calls."""

    async def stop(self) -> None:
        """Stop background work and flush what it buffers."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options shared by every service process."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Several processes of one service may share a port.
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # A gRPC aio server takes new calls one per turn of its event loop; the rest wait in
        # core, which sheds them beyond these (random early drop between the two).
        ("grpc.server.max_pending_requests", settings.server_max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 2 * settings.server_max_pending_calls),
    ]


class ServiceHost:
    """A running gRPC server with its components; see the module docstring."""

    def __init__(
        self, name: str, settings: Settings, port: int, components: Sequence[Component]
    ) -> None:
        self.name = name
        self.settings = settings
        self.port = port
        self.components = list(components)
        self.health = HealthServicer()
        self.server = aio.server(
            interceptors=[ServiceInterceptor(settings, name)],
            options=server_options(settings),
            # Beyond this many RPCs (streams included) grpc answers RESOURCE_EXHAUSTED itself.
            maximum_concurrent_rpcs=settings.server_max_concurrent_rpcs,
        )
        self._names = [n for c in self.components for n in c.service_names]

    async def start(self) -> int:
        """Start components and the server; returns the bound port."""
        for component in self.components:
            component.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self._names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        bound = self.server.add_insecure_port(f"{self.settings.host}:{self.port}")
        for component in self.components:
            await component.start()
        await self.server.start()
        for service in ["", *self._names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"port": bound, "services": self._names})
        return bound

    async def stop(self) -> None:
        """Graceful stop in the documented order."""
        await self.health.enter_graceful_shutdown()
        for component in self.components:
            # Optional hook: long-lived streams end with a status clients retry on (instead of
            # being cut when the grace runs out).
            drain = getattr(component, "drain", None)
            if drain is not None:
                await drain()
        await self.server.stop(self.settings.shutdown_grace_s)
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception(
                    "component failed to stop", extra={"component": type(component).__name__}
                )
        log.info("stopped")


async def run_until_signalled(host: ServiceHost) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully; a second signal exits at once."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            os._exit(1)
        log.info("shutdown requested")
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await host.start()
    gc_tuning.settle(host.settings.gc_young_threshold)
    await stopping.wait()
    await host.stop()
    gc_tuning.release()


def main(name: str, build: BuildComponents) -> None:
    """Entry point of a service process: ``python -m <service>``."""
    settings = Settings.from_env()
    logs.configure(name, settings.log_level)
    serve_metrics(settings.host, settings.metrics_port)

    async def run() -> None:
        components = await build(settings)
        host = ServiceHost(name, settings, settings.port_of(name), components)
        await run_until_signalled(host)

    with suppress(KeyboardInterrupt):
        asyncio.run(run())


class BuildComponents(Protocol):
    """Creates a service's components (opening pools and clients) from settings."""

    async def __call__(self, settings: Settings) -> Sequence[Component]: ...


class Servicer:
    """A component made of one generated servicer: registers it, no background work.

    RPCs a servicer does not override yet answer UNIMPLEMENTED (the generated base class does
    that); the typed stubs mark those methods abstract, hence ``type: ignore[abstract]`` where
    such a servicer is created.
    """

    def __init__(
        self, servicer: object, add_to_server: Callable[[Any, aio.Server], None], full_name: str
    ) -> None:
        self.servicer = servicer
        self._add = add_to_server
        self.service_names = (full_name,)

    def register(self, server: aio.Server) -> None:
        """Add the servicer to the server."""
        self._add(self.servicer, server)

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""
