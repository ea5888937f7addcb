"""PostgreSQL 15 from the Debian package, with its own data directory and loopback port.

Authentication: ``trust`` on the Unix socket (which lives next to the data directory and is
only reachable by root and the server's user; it is how this module bootstraps the role), and
``scram-sha-256`` on TCP, so the services connect with the real ``lastmile`` password just as
they do against a managed database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ops.servers.process import ManagedProcess, ServerError, ensure_free

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROLE = "lastmile"
PASSWORD = "lastmile"
DATABASE = "lastmile"
OS_USER = "postgres"

# Modest values: the dev stack shares two cores and a few GB with everything else, while
# every service keeps a pool of connections open.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "128MB",
    "max_connections": "200",
    "work_mem": "8MB",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": "off",
}

# Trust on the socket (reachable by root and the server's user only), passwords on TCP.
INITDB_OPTIONS = (
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
)

# psql's \gexec runs the generated statement only when the SELECT returns it, which keeps
# CREATE DATABASE (not allowed inside a DO block) idempotent.
BOOTSTRAP_SQL = f"""
SELECT 'CREATE ROLE {ROLE} LOGIN PASSWORD ''{PASSWORD}'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') \\gexec
SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE}') \\gexec
"""


def _run_as_owner() -> list[str]:
    """Prefix that runs a PostgreSQL tool as a non-root user (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--"]
    return []


def _tool(name: str, *args: str, as_owner: bool = True) -> list[str]:
    """argv of a PostgreSQL program; ``as_owner`` for those that must not run as root."""
    prefix = _run_as_owner() if as_owner else []
    return [*prefix, str(PG_BIN / name), *args]


def _chown_to_owner(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(OS_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class PostgresServer:
    """One PostgreSQL cluster: ``data_dir`` holds the data, its parent the socket and log."""

    def __init__(self, data_dir: Path, port: int) -> None:
        """Describe the cluster; :meth:`start` creates it on first use."""
        self.data_dir = data_dir.resolve()
        self.port = port
        self.base_dir = self.data_dir.parent
        self.log_path = self.base_dir / "postgres.log"
        self._process = ManagedProcess(
            "postgres", self._server_argv(), log_path=self.log_path, cwd=self.base_dir
        )

    @property
    def dsn(self) -> str:
        """Connection string of the application role over TCP."""
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def socket_dir(self) -> Path:
        """Directory holding the server's Unix socket."""
        return self.base_dir

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process.running

    @property
    def pid(self) -> int | None:
        """PID of the process we started (``runuser`` when running as root)."""
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster if needed, start it, wait for connections, ensure role and db."""
        ensure_free(self.port, "postgres")
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._process.start()
        self._process.wait_ready(self._accepts_connections, timeout)
        self._bootstrap()

    def stop(self, grace: float = 15.0) -> None:
        """Fast shutdown through ``pg_ctl`` (rolls back sessions), then signals if it hangs."""
        if self._process.running:
            subprocess.run(
                _tool(
                    "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-t", str(int(grace))
                ),
                capture_output=True,
                check=False,
            )
        self._process.stop(grace)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; return psql's output."""
        where = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", OS_USER, "-d", database]
        argv = _tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", as_owner=False)
        result = subprocess.run(
            [*argv, *where],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _server_argv(self) -> list[str]:
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        flags = [f"--{key}={value}" for key, value in settings.items()]
        return _tool("postgres", "-D", str(self.data_dir), *flags)

    def _prepare_dirs(self) -> None:
        # The server's user must own the data dir and be able to create its socket and lock
        # files next to it; the parent is ours (the project or a test's temp dir).
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        _chown_to_owner(self.base_dir)
        _chown_to_owner(self.data_dir)
        self._check_reachable()

    def _check_reachable(self) -> None:
        # A root-only ancestor (pytest's /tmp/pytest-of-root is 0700) would otherwise surface
        # as a puzzling "could not change directory" from initdb.
        prefix = _run_as_owner()
        if not prefix:
            return
        probe = subprocess.run([*prefix, "test", "-w", str(self.base_dir)], check=False)
        if probe.returncode != 0:
            raise ServerError(
                f"user {OS_USER!r} cannot write {self.base_dir}: put the PostgreSQL directory "
                "under a path every ancestor of which that user can traverse"
            )

    def _initdb(self) -> None:
        result = subprocess.run(
            _tool("initdb", "-D", str(self.data_dir), "-U", OS_USER, *INITDB_OPTIONS),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.base_dir,
        )
        if result.returncode != 0:
            # A half-made cluster would make the next start skip initdb and fail obscurely.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise ServerError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _accepts_connections(self) -> bool:
        # Through our own socket directory: only our server can answer there.
        where = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", OS_USER, "-d", "postgres"]
        result = subprocess.run(
            [*_tool("pg_isready", "-q", "-t", "1", as_owner=False), *where],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _bootstrap(self) -> None:
        self.psql(BOOTSTRAP_SQL)
