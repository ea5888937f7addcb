"""``python -m ops up`` brings the whole platform up, ``status`` sees it, Ctrl-C stops every
process, and a second ``up`` on the same data directory comes back with the data kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis

from core.objects import s3_client
from core.settings import Settings
from ops.servers.process import free_port, free_port_block
from ops.stack import SERVICES
from tests.helpers import wait_until
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

READY_LINE = "ready. Ctrl-C stops everything."
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
# postgresql, redis, s3, four services, envoy.
COMPONENTS = 9


# The stack's ports are chosen once and bound twice (up, stop, up again), minutes apart: they
# must stay free meanwhile, which free_port's range gives (see ops.servers.process).


@pytest.fixture(scope="module")
def stack_env(road_graph: Path) -> Iterator[dict[str, str]]:
    """LASTMILE_* variables for a stack on free ports with a fresh data directory."""
    # Not under pytest's tmp dir, whose parents are root-only: PostgreSQL runs as postgres.
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-up-"))
    data_dir.chmod(0o755)  # mkdtemp makes it 0700; the postgres user must traverse it
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASTMILE_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "LASTMILE_DATA_DIR": str(data_dir),
            "LASTMILE_GRAPH_DIR": str(road_graph.parent),
            "LASTMILE_DATABASE_URL": (
                f"postgresql://lastmile:lastmile@127.0.0.1:{free_port()}/lastmile"
            ),
            "LASTMILE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "LASTMILE_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
            "LASTMILE_EDGE_PORT": str(free_port()),
            "LASTMILE_EDGE_ADMIN_PORT": str(free_port()),
            "LASTMILE_WEB_PORT": str(free_port()),
            "LASTMILE_METRICS_PORT": str(free_port_block(len(SERVICES))),
            "LASTMILE_SHUTDOWN_GRACE_S": "2",
            **{f"LASTMILE_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
        }
    )
    try:
        yield env
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class UpRun:
    """One ``lastmile up`` process and what it printed."""

    process: subprocess.Popen[bytes]
    stdout: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def pids(self) -> list[int]:
        return [int(m) for m in re.findall(r" pid (\d+)$", self.output(), re.MULTILINE)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _start_up(env: dict[str, str], log_dir: Path, run: int) -> UpRun:
    stdout = log_dir / f"up-{run}.out"
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops", "up"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    up = UpRun(process, stdout)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"lastmile up exited {process.returncode}:\n{up.output()}")
        return READY_LINE in up.output()

    wait_until(ready, timeout=START_TIMEOUT_S, what="lastmile up ready")
    return up


def _stop_up(up: UpRun) -> int:
    """Ctrl-C, by PID; wait for the exit status."""
    up.process.send_signal(signal.SIGINT)
    return up.process.wait(timeout=STOP_TIMEOUT_S)


def _cleanup(up: UpRun) -> None:
    """After a failure: stop ``up`` and anything it started that is still alive, by PID."""
    if up.process.poll() is None:
        up.process.send_signal(signal.SIGINT)
        try:
            up.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            up.process.kill()
            up.process.wait()
    for pid in up.pids():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_all_serving(env: dict[str, str]) -> None:
    result = _status(env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
    assert rows == [[name, "SERVING", "SERVING"] for name in SERVICES]


async def _psql(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_up_status_stop_and_up_again(stack_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.from_env(stack_env)
    first = _start_up(stack_env, tmp_path, 1)
    try:
        pids = first.pids()
        assert len(pids) == COMPONENTS, first.output()
        assert all(_alive(pid) for pid in pids)
        assert f"road graph up to date: {settings.graph_path}" in first.output()
        _assert_all_serving(stack_env)

        # Leave data in each store, to find it again after a restart.
        asyncio.run(_psql(settings.database_url, "CREATE TABLE kept_across_runs (x int)"))
        redis.Redis.from_url(settings.redis_url).set("kept-across-runs", b"1")
        s3_client(settings).put_object(settings.proof_bucket, "kept.txt", io.BytesIO(b"k"), 1)

        assert _stop_up(first) == 0, first.output()
        assert first.output().rstrip().endswith("stopped.")
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        _cleanup(first)

    # Nothing listens any more.
    status = _status(stack_env)
    assert status.returncode == 1
    assert "SERVING" not in status.stdout

    second = _start_up(stack_env, tmp_path, 2)
    try:
        assert f"road graph up to date: {settings.graph_path}" in second.output()
        assert len(second.pids()) == COMPONENTS
        assert set(second.pids()).isdisjoint(pids)
        _assert_all_serving(stack_env)

        table = asyncio.run(_psql(settings.database_url, "SELECT to_regclass('kept_across_runs')"))
        assert table == "kept_across_runs"
        today = dt.datetime.now(dt.UTC).date()
        partition = f"location_history_{today:%Y%m%d}"
        assert asyncio.run(_psql(settings.database_url, f"SELECT to_regclass('{partition}')"))
        assert redis.Redis.from_url(settings.redis_url).get("kept-across-runs") == b"1"
        kept = s3_client(settings).get_object(settings.proof_bucket, "kept.txt")
        try:
            assert kept.read() == b"k"
        finally:
            kept.close()
            kept.release_conn()

        assert _stop_up(second) == 0, second.output()
        assert second.output().rstrip().endswith("stopped.")
        assert [pid for pid in second.pids() if _alive(pid)] == []
    finally:
        _cleanup(second)
