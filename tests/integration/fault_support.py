"""The platform of the fault tests: its own PostgreSQL, Redis (persistent, as the product runs
it), S3, four services and Envoy, each of which a test can kill with SIGKILL and start again;
and the one-line report every fault test writes.

Nothing here touches the session's servers: other test modules never see these faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from ops import health
from ops.servers import PostgresServer, RedisServer, SeaweedS3, free_port
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, running, temporary_postgres
from tests.helpers import wait_until
from tests.integration.conftest import Platform, platform_settings, running_platform

START_TIMEOUT_S = 60.0
#: What a fault test may break (besides the four services by name).
SERVERS = ("redis", "postgres", "envoy")


@dataclass
class FaultPlatform:
    """A running platform plus the servers under it; see the module docstring."""

    platform: Platform
    postgres: PostgresServer
    redis: RedisServer
    s3: SeaweedS3

    @property
    def settings(self) -> Settings:
        """The settings every process of this platform runs with."""
        return self.platform.settings

    def kill(self, component: str) -> None:
        """SIGKILL the whole process group of ``component`` (a service name, or one of
        :data:`SERVERS`): no shutdown hook, no flush, as in a crash or an OOM kill."""
        if component == "postgres":
            self._crash_postgres()
            return
        pid = self._pid(component)
        assert pid is not None, f"{component} is not running"
        os.killpg(pid, signal.SIGKILL)
        self._reap(component)

    def pause(self, service: str, paused: bool) -> None:
        """SIGSTOP (or SIGCONT) a service: frozen in the middle of whatever it was doing."""
        pid = self.platform.processes[service].pid
        assert pid is not None, f"{service} is not running"
        os.killpg(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def _crash_postgres(self) -> None:
        """SIGKILL the postmaster and every process it started (each leads a process group of
        its own, so one killpg is not enough): WAL recovery runs at the next start."""
        postmaster = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Its parent (runuser, or this process) reaps it; until then its pid looks alive and
        # the next postmaster would refuse the data directory.
        wait_until(lambda: not self.postgres.running, 10.0, what="the postmaster reaped")
        self.postgres.stop(grace=5.0)

    def start(self, component: str) -> None:
        """Start ``component`` again on the same ports and data, and wait until it serves."""
        if component == "redis":
            self.redis.start()
        elif component == "postgres":
            self.postgres.start()
        elif component == "envoy":
            edge = self.platform.edge
            assert edge is not None
            edge.start()
        else:
            process = self.platform.processes[component]
            process.start()
            address = self.platform.addresses[component]
            process.wait_ready(lambda: health.is_serving(address), START_TIMEOUT_S)

    async def restart(self, component: str) -> None:
        """:meth:`start` off the event loop (the fleet keeps driving meanwhile)."""
        await asyncio.to_thread(self.start, component)

    def all_serving(self) -> bool:
        """Whether every service answers its health check."""
        return all(health.is_serving(a) for a in self.platform.addresses.values())

    def log_size(self, service: str) -> int:
        """Characters the service has logged so far (see :meth:`log_since`)."""
        return len(self.platform.log_of(service))

    def log_since(self, service: str, offset: int) -> str:
        """What the service (and its restarted successor) logged after ``offset``."""
        return self.platform.log_of(service)[offset:]

    def tracebacks(self, lines: int = 3, width: int = 600) -> dict[str, list[str]]:
        """The last log lines with a traceback of each service (shortened), for failure
        messages: the logs are removed with the platform."""
        found = {}
        for name in self.platform.processes:
            hits = [line for line in self.platform.log_of(name).splitlines() if "Traceback" in line]
            if hits:
                found[name] = [
                    f"{line[: width // 2]} ... {line[-width // 2 :]}" for line in hits[-lines:]
                ]
        return found

    def _pid(self, component: str) -> int | None:
        if component == "redis":
            return self.redis.pid
        if component == "envoy":
            return self.platform.edge.pid if self.platform.edge else None
        return self.platform.processes[component].pid

    def _reap(self, component: str) -> None:
        # stop() on a dead process only collects its exit status (and kills stragglers).
        if component == "redis":
            self.redis.stop(grace=5.0)
        elif component == "envoy":
            assert self.platform.edge is not None
            self.platform.edge.stop(grace=5.0)
        else:
            self.platform.processes[component].stop(grace=5.0)


def _children(parent: int) -> list[int]:
    """Pids of the processes whose parent is ``parent`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def fault_settings(
    postgres: PostgresServer, redis: RedisServer, s3: SeaweedS3, graph_dir: Path, data_dir: Path
) -> Settings:
    """The integration platform's settings, with the recovery knobs turned down so that a
    killed consumer's pending entries are claimed within seconds rather than the production
    default of half a minute (docs/reliability.md gives both)."""
    return platform_settings(postgres, redis, s3, graph_dir, data_dir).replace(
        processor_claim_idle_ms=3000,
        processor_claim_interval_s=1.0,
        processor_lease_s=2.0,
        processor_block_ms=200,
        order_consumer_block_ms=200,
        order_consumer_claim_idle_ms=3000,
        outbox_poll_interval_s=0.1,
    )


@contextlib.contextmanager
def fault_platform(graph_dir: Path, keep_logs: Path) -> Iterator[FaultPlatform]:
    """Own servers and services, stopped by PID and removed at the end; the services' and
    Envoy's logs are copied to ``keep_logs`` first."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-faults-"))
    try:
        with (
            temporary_postgres() as postgres,
            # Persistent as in `lastmile up` (append-only file, fsync every second).
            running(RedisServer(data_dir / "redis", free_port(), persistent=True)) as redis,
            running(SeaweedS3(data_dir / "s3", free_port(), S3_ACCESS_KEY, S3_SECRET_KEY)) as s3,
        ):
            settings = fault_settings(postgres, redis, s3, graph_dir, data_dir)
            with running_platform(settings, data_dir, s3) as platform:
                yield FaultPlatform(platform, postgres, redis, s3)
    finally:
        shutil.copytree(data_dir / "logs", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class FaultReport:
    """What one fault cost; every "lost" and "duplicated" figure must be 0."""

    fault: str
    acked_fixes: int
    stored_fixes: int
    lost_fixes: int
    duplicated_fixes: int
    orders_accepted: int
    orders_lost: int
    orders_bad_history: int
    proofs_confirmed: int
    proofs_lost: int
    customer_streams: int
    customers_without_updates: int
    driver_reconnects: int
    customer_reconnects: int
    client_retries: int
    outage_s: float
    recovered_s: float
    orders_done_s: float

    def line(self) -> str:
        """The one-line summary."""
        return (
            f"[fault {self.fault}] fixes acked {self.acked_fixes}, stored {self.stored_fixes},"
            f" lost {self.lost_fixes}, duplicated {self.duplicated_fixes};"
            f" orders accepted {self.orders_accepted}, lost {self.orders_lost},"
            f" bad history {self.orders_bad_history};"
            f" proofs confirmed {self.proofs_confirmed}, lost {self.proofs_lost};"
            f" customer streams {self.customer_streams},"
            f" without updates after the fault {self.customers_without_updates};"
            f" reconnects drivers {self.driver_reconnects},"
            f" customers {self.customer_reconnects}; retried calls {self.client_retries};"
            f" outage {self.outage_s:.1f}s, recovered {self.recovered_s:.1f}s and every order"
            f" delivered {self.orders_done_s:.1f}s after the fault began"
        )

    @property
    def losses(self) -> dict[str, int]:
        """Every figure that must be zero, by name."""
        return {
            "lost_fixes": self.lost_fixes,
            "duplicated_fixes": self.duplicated_fixes,
            "orders_lost": self.orders_lost,
            "orders_bad_history": self.orders_bad_history,
            "proofs_lost": self.proofs_lost,
            "customers_without_updates": self.customers_without_updates,
        }

    def append_to(self, path: Path) -> None:
        """Add this report to the JSON list in ``path`` (created on first use)."""
        reports: list[dict[str, Any]] = []
        if path.exists():
            reports = json.loads(path.read_text())
        reports.append({**asdict(self), "line": self.line()})
        path.write_text(json.dumps(reports, indent=2) + "\n")


def wait_all_serving(platform: FaultPlatform, timeout: float = START_TIMEOUT_S) -> None:
    """Every service answers its health check (after a dependency came back)."""
    wait_until(platform.all_serving, timeout=timeout, what="every service SERVING")
