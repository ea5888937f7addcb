"""Scale-out, proven locally: 2 gateway and 2 tracking processes on one Redis and PostgreSQL.

Drivers spread over both gateways; the tracking processes share the ping shards (each owns
some, tracking.shard_leases). One gateway and one tracking process are SIGKILLed while batches are in
flight, drivers on the dead gateway reconnect to the other one, the dead processes come back,
and every driver ends with every batch acked exactly once and every fix stored exactly once.
(Customers on either tracking process are covered by test_tracking_customer.py.)
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis

from core import topics
from core.geo import LatLng
from core.settings import Settings
from ops.servers import ManagedProcess, PostgresServer, RedisServer
from ops.servers.process import free_port
from ops.stack import service_process, start_service
from tests.helpers import wait_until
from tests.integration.ingest_support import DriverApp, batch, fix, history_rows, now_s, token
from tracking.processor import GROUP

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VALLETTA = LatLng(35.8960, 14.5110)
DRIVERS = 8
FIXES_PER_BATCH = 3
# Batches sent before the kill (acked, then two in flight), before the restart, and in all.
BEFORE_KILL, BEFORE_RESTART, BATCHES = 10, 22, 34
PHASE_TIMEOUT_S = 60.0


@dataclass
class Replicas:
    """Two processes of each kind; index 0 of each is the one that gets killed."""

    settings: list[Settings]
    log_dir: Path
    gateways: list[ManagedProcess] = field(default_factory=list)
    trackers: list[ManagedProcess] = field(default_factory=list)

    def gateway_address(self, index: int) -> str:
        return f"127.0.0.1:{self.settings[index].gateway_port}"

    def tracking_address(self, index: int) -> str:
        return f"127.0.0.1:{self.settings[index].tracking_port}"

    def start(self, index: int) -> None:
        """Start (or restart) gateway ``index`` and tracking ``index``; wait until SERVING."""
        settings = self.settings[index]
        gateway = service_process("gateway", settings, self.log_dir / f"g{index}")
        tracker = service_process("tracking", settings, self.log_dir / f"t{index}")
        start_service(tracker, self.tracking_address(index))
        start_service(gateway, self.gateway_address(index))
        for processes, process in ((self.gateways, gateway), (self.trackers, tracker)):
            if len(processes) > index:
                processes[index] = process
            else:
                processes.append(process)

    def kill(self, index: int) -> None:
        """SIGKILL gateway ``index`` and tracking ``index``: no drain, no flush."""
        for process in (self.gateways[index], self.trackers[index]):
            assert process.pid is not None
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def replicas(
    postgres_server: PostgresServer, redis_server: RedisServer, road_graph: Path
) -> Iterator[Replicas]:
    """Gateways and tracking processes 0 and 1 on free ports, sharing Redis and PostgreSQL."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-scale-"))
    base = Settings.from_env({}).replace(
        host="127.0.0.1",
        metrics_port=0,
        data_dir=data_dir,
        database_url=postgres_server.dsn,
        redis_url=redis_server.url,
        graph_dir=road_graph.parent,
        osm_pbf=REPO / "maps" / "malta.osm.pbf",
        shutdown_grace_s=2.0,
        # The survivor takes the killed processor's shards (its lease runs out) and claims what
        # it read but never acked, soon.
        processor_claim_idle_ms=2000,
        processor_claim_interval_s=1.0,
        processor_lease_s=2.0,
        processor_block_ms=200,
    )
    settings = [base.replace(gateway_port=free_port(), tracking_port=free_port()) for _ in range(2)]
    state = Replicas(settings, data_dir / "logs")
    try:
        state.start(0)
        state.start(1)
        yield state
    finally:
        for process in [*state.gateways, *state.trackers]:
            process.stop(grace=10.0)


class Driver(threading.Thread):
    """One driver app sending ``BATCHES`` batches, reconnecting (and resending what was not
    acked) whenever its gateway goes away. Phases are gated by the test's events."""

    def __init__(self, replicas: Replicas, index: int, gates: dict[str, threading.Event]) -> None:
        super().__init__(daemon=True)
        self.replicas = replicas
        self.driver_id = f"drv-scale-{uuid.uuid4().hex[:8]}"
        self.home = index % 2  # drivers spread over both gateways
        self.gates = gates
        self.acked: list[int] = []
        self.reconnects = 0
        self.error: BaseException | None = None
        self.reached = {name: threading.Event() for name in ("kill", "restart")}
        start = int(now_s()) - 3600
        self.fixes = [
            [fix(VALLETTA, start + b * FIXES_PER_BATCH + i) for i in range(FIXES_PER_BATCH)]
            for b in range(BATCHES)
        ]
        self.app: DriverApp | None = None
        self.next_seq = 1
        self.in_flight: list[int] = []

    def run(self) -> None:
        try:
            self._connect(prefer=self.home)
            self._send_until(BEFORE_KILL, in_flight=2)
            self.reached["kill"].set()
            assert self.gates["killed"].wait(PHASE_TIMEOUT_S)
            self._drain_in_flight()
            self._send_until(BEFORE_RESTART)
            self.reached["restart"].set()
            assert self.gates["restarted"].wait(PHASE_TIMEOUT_S)
            # Back home: half of the drivers land on the restarted gateway.
            self._connect(prefer=self.home)
            self._send_until(BATCHES)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.reached["kill"].set()
            self.reached["restart"].set()
        finally:
            if self.app is not None:
                self.app.close()

    def _connect(self, prefer: int) -> None:
        """A Connect stream on the preferred gateway, else the other; resume after the ack."""
        if self.app is not None:
            self.app.close()

        def attempt() -> bool:
            for index in (prefer, 1 - prefer):
                app = DriverApp(
                    self.replicas.gateway_address(index),
                    token(self.replicas.settings[0], self.driver_id),
                )
                try:
                    welcome = app.hello()
                except (grpc.RpcError, EOFError):
                    app.close()
                    continue
                self.app, self.next_seq = app, welcome.last_acked_seq + 1
                return True
            return False

        wait_until(attempt, timeout=PHASE_TIMEOUT_S, what=f"{self.driver_id} connected")

    def _send_until(self, last: int, in_flight: int = 0) -> None:
        """Send and get acks up to ``last`` (then ``in_flight`` more unacknowledged)."""
        while self.next_seq <= last:
            assert self.app is not None
            seq = self.next_seq
            try:
                response = self.app.send_and_wait(batch(seq, self.fixes[seq - 1]))
            except (grpc.RpcError, EOFError):
                self.reconnects += 1
                self._connect(prefer=1 - self.home)
                continue
            assert response.WhichOneof("command") == "ack", response
            assert response.ack.seq == seq
            self.acked.append(seq)
            self.next_seq = seq + 1
        assert self.app is not None
        self.in_flight = list(range(last + 1, min(last + in_flight, BATCHES) + 1))
        for seq in self.in_flight:
            self.app.send(batch(seq, self.fixes[seq - 1]))

    def _drain_in_flight(self) -> None:
        """The acks of the batches sent before the kill, or a reconnect if the stream died
        (the Welcome then says which of them the dead gateway had made durable)."""
        assert self.app is not None
        try:
            for seq in self.in_flight:
                response = self.app.recv()
                while response.WhichOneof("command") not in ("ack", "reject"):
                    response = self.app.recv()
                assert response.WhichOneof("command") == "ack" and response.ack.seq == seq
                self.acked.append(seq)
                self.next_seq = seq + 1
        except (grpc.RpcError, EOFError):
            self.reconnects += 1
            self._connect(prefer=1 - self.home)
            # Made durable before the gateway died, their acks lost with it: the Welcome's
            # last accepted seq acknowledges them.
            self.acked += [seq for seq in self.in_flight if seq < self.next_seq]
        self.in_flight = []


def _pending_entries(url: str, shards: int) -> int:
    client = redis.Redis.from_url(url)
    try:
        total = 0
        for shard in range(shards):
            for group in client.xinfo_groups(topics.ping_stream(shard)):
                if group["name"].decode() == GROUP:
                    total += int(group["pending"])
        return total
    finally:
        client.close()


def test_kill_and_restart_one_gateway_and_one_processor_loses_and_duplicates_nothing(
    replicas: Replicas,
) -> None:
    gates = {"killed": threading.Event(), "restarted": threading.Event()}
    drivers = [Driver(replicas, i, gates) for i in range(DRIVERS)]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        assert driver.reached["kill"].wait(PHASE_TIMEOUT_S), driver.driver_id
    replicas.kill(0)  # two batches per driver in flight on both gateways
    gates["killed"].set()
    for driver in drivers:
        assert driver.reached["restart"].wait(PHASE_TIMEOUT_S), driver.driver_id
    replicas.start(0)
    gates["restarted"].set()
    for driver in drivers:
        driver.join(PHASE_TIMEOUT_S)
        assert not driver.is_alive() and driver.error is None, (driver.driver_id, driver.error)

    # Acked seqs: every batch, in order, no gap; a resent batch is acked again, never skipped.
    for driver in drivers:
        assert sorted(set(driver.acked)) == list(range(1, BATCHES + 1)), driver.driver_id
    # Half of the drivers lost their gateway and carried on through the other one.
    assert sum(d.reconnects > 0 for d in drivers) >= DRIVERS // 2
    # Every fix in the history exactly once (the killed processor's reads are claimed).
    settings = replicas.settings[0]
    for driver in drivers:
        expected = [f.captured_at.ToDatetime().timestamp() for b in driver.fixes for f in b]

        def stored(driver: Driver = driver, count: int = len(expected)) -> list[float]:
            rows = history_rows(settings.database_url, driver.driver_id)
            return [r["recorded_at"].timestamp() for r in rows] if len(rows) >= count else []

        times = wait_until(stored, timeout=PHASE_TIMEOUT_S, what=f"{driver.driver_id} history")
        assert sorted(times) == sorted(expected), driver.driver_id
    wait_until(
        lambda: _pending_entries(settings.redis_url, settings.ingest_shards) == 0,
        timeout=PHASE_TIMEOUT_S,
        what="no ping entry left pending in the consumer groups",
    )
