"""Redis 7 from the Debian package, with its own directory and loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from ops.servers.process import ManagedProcess, ServerError, ensure_free


def _redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise ServerError("redis-server not found: install the Debian package redis-server")
    return found


class RedisServer:
    """One ``redis-server``; in-memory only unless ``persistent`` (append-only file in ``dir``)."""

    def __init__(self, dir: Path, port: int, persistent: bool = False, databases: int = 16) -> None:
        """Describe the server (``databases``: how many numbered databases it has);
        :meth:`start` runs it."""
        self.dir = dir.resolve()
        self.port = port
        self.persistent = persistent
        self.databases = databases
        self.log_path = self.dir / "redis.log"
        self._process = ManagedProcess("redis", self._argv(), log_path=self.log_path, cwd=self.dir)

    @property
    def url(self) -> str:
        """Connection URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process.running

    @property
    def pid(self) -> int | None:
        """PID of the server."""
        return self._process.pid

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers PING."""
        ensure_free(self.port, "redis")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._process.start()
        self._process.wait_ready(self._pings, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Redis flushes the append-only file on it), SIGKILL after ``grace``."""
        self._process.stop(grace)

    def _argv(self) -> list[str]:
        argv = [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.dir), "--daemonize", "no", "--save", ""]
        argv += ["--databases", str(self.databases)]
        if self.persistent:
            # fsync once a second: survives a server restart, which is what the tests need.
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def _pings(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            # Our server, not another one that grabbed the port meanwhile.
            return bool(client.info("server").get("process_id") == self.pid and client.ping())
        finally:
            client.close()
