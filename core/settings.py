"""One typed, frozen settings object per process, read from ``LASTMILE_*`` environment variables.

Every field has a default that works for the local stack, and a one-line doc. Nothing else in
the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

PREFIX = "LASTMILE_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True, slots=True)
class Settings:
    """Process configuration. Environment variable = ``LASTMILE_`` + field name upper-cased."""

    # --- network -------------------------------------------------------------------------
    host: str = _doc("Interface every server binds to.", "127.0.0.1")
    gateway_port: int = _doc("gRPC port of the driver gateway.", 50051)
    tracking_port: int = _doc("gRPC port of the tracking service.", 50052)
    dispatch_port: int = _doc("gRPC port of the dispatch service.", 50053)
    pod_port: int = _doc("gRPC port of the proof-of-delivery service.", 50054)
    edge_port: int = _doc("Envoy edge port (gRPC and grpc-web).", 8080)
    edge_admin_port: int = _doc("Envoy admin port (loopback only).", 9901)
    metrics_port: int = _doc(
        "Prometheus port of this process (0 = off); `lastmile up` gives services this + index.",
        9100,
    )

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = _doc(
        "Where `lastmile up` keeps server data and logs.", PROJECT_ROOT / ".lastmile"
    )
    database_url: str = _doc(
        "PostgreSQL DSN.", "postgresql://lastmile:lastmile@127.0.0.1:55432/lastmile"
    )
    db_pool_min: int = _doc("Minimum connections in the asyncpg pool.", 1)
    db_pool_max: int = _doc("Maximum connections in the asyncpg pool.", 10)
    redis_url: str = _doc("Redis URL.", "redis://127.0.0.1:56379/0")
    s3_endpoint: str = _doc("S3 endpoint host:port.", "127.0.0.1:58333")
    s3_access_key: str = _doc("S3 access key.", "lastmile")
    s3_secret_key: str = _doc("S3 secret key.", "lastmile-dev-secret")
    s3_secure: bool = _doc("Use TLS towards S3.", False)
    s3_region: str = _doc("S3 region used for signing.", "us-east-1")
    proof_bucket: str = _doc("Bucket holding proof-of-delivery objects.", "proofs")
    history_retention_days: int = _doc("Days of location history kept.", 7)

    # --- roads ---------------------------------------------------------------------------
    osm_pbf: Path = _doc(
        "OpenStreetMap extract of the city served.", PROJECT_ROOT / "maps" / "malta.osm.pbf"
    )
    graph_dir: Path = _doc(
        "Where the OSRM graph is built and read.", PROJECT_ROOT / ".lastmile" / "graph"
    )
    osrm_algorithm: str = _doc("OSRM algorithm: MLD or CH.", "MLD")

    # --- auth ----------------------------------------------------------------------------
    token_secret: str = _doc("HMAC key for signed driver/dispatcher tokens.", "dev-only-change-me")
    token_audience: str = _doc("Audience claim expected in tokens.", "lastmile")
    token_ttl_s: int = _doc("Lifetime of issued tokens in seconds.", 12 * 3600)

    # --- runtime -------------------------------------------------------------------------
    log_level: str = _doc("Log level (DEBUG, INFO, WARNING, ERROR).", "INFO")
    shutdown_grace_s: float = _doc("Seconds given to open streams to drain on shutdown.", 5.0)
    max_message_bytes: int = _doc("Largest gRPC message accepted.", 4 * 1024 * 1024)
    ingest_shards: int = _doc("Number of Redis stream shards for driver pings.", 4)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment)."""
        source = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = source.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(hints[f.name], raw, f.name)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            PREFIX + f.name.upper(): _render(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def graph_path(self) -> Path:
        """The ``.osrm`` base path of the built graph."""
        return self.graph_dir / (self.osm_pbf.name.removesuffix(".osm.pbf") + ".osrm")

    def port_of(self, service: str) -> int:
        """gRPC port of a service by name (gateway, tracking, dispatch, pod)."""
        port: int = getattr(self, f"{service}_port")
        return port


def _parse(kind: Any, raw: str, name: str) -> Any:
    try:
        if kind is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting: used by ``lastmile config``."""
    return [
        (PREFIX + f.name.upper(), _render(f.default), f.metadata.get("doc", ""))
        for f in dataclasses.fields(Settings)
    ]
