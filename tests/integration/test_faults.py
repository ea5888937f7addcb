"""Fault tests: a small fleet drives through the Envoy edge while one piece of the platform
crashes (SIGKILL) and comes back: Redis, PostgreSQL, each service, the edge.

Each test: six drivers stream GPS batches on their Connect streams (the simulator's
DriverLink: reconnect with backoff, resend what is not acked), three orders picked up before
the fault are delivered through it with photo proofs, two more are created when it hits, and
every order's customer follows it on a Track stream that reconnects on error. After the
heal, exact accounting: every acked fix stored exactly once (by driver and capture time),
every accepted order present with its whole history, every confirmed proof retrievable, every
customer stream updated after the fault. The report line of each test goes to stdout, to a
JSON file under the pytest tmp dir and to ``record_property``; docs/reliability.md keeps the
figures.

The module runs its own PostgreSQL, Redis (persistent, as the product runs it), S3, services
and edge: the session's servers that other modules use are never touched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from core.geo import LatLng
from core.roads import RoadNetwork
from tests.integration.fault_scenario import Scenario
from tests.integration.fault_support import FaultPlatform, FaultReport, fault_platform

pytestmark = pytest.mark.integration

# Places the drivers go back and forth between (Valletta, Floriana, Sliema, Gzira, Msida).
PLACES = [
    LatLng(35.8989, 14.5146),
    LatLng(35.8920, 14.5050),
    LatLng(35.9122, 14.5042),
    LatLng(35.9060, 14.4940),
    LatLng(35.8960, 14.4890),
    LatLng(35.9010, 14.5000),
]
Record = Callable[[str, object], None]


@pytest.fixture(scope="module")
def faults(road_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultPlatform]:
    """This module's own platform (servers included); logs kept under the pytest tmp dir."""
    with fault_platform(road_graph.parent, tmp_path_factory.mktemp("fault-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def paths(roads: RoadNetwork) -> list[list[LatLng]]:
    """One round trip on the roads per driver."""
    found = []
    for index, start in enumerate(PLACES):
        end = PLACES[(index + 2) % len(PLACES)]
        line = roads.route([start, end]).geometry
        found.append([*line, *reversed(line)])
    return found


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON list every fault test appends its report to."""
    return tmp_path_factory.mktemp("faults") / "fault-reports.json"


def _publish(scenario: Scenario, report: FaultReport, path: Path, record: Record) -> None:
    print(report.line())
    for problem in scenario.problems:
        print(f"  problem: {problem}")
    report.append_to(path)
    record("fault_report", report.line())
    assert report.losses == dict.fromkeys(report.losses, 0), (report.line(), scenario.problems)
    assert not scenario.problems, (report.line(), scenario.problems)


@contextlib.asynccontextmanager
async def _explained(faults: FaultPlatform) -> AsyncIterator[None]:
    """Failures carry the services' last tracebacks (their logs go with the platform)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{faults.tracebacks()}") from exc


async def _crash_and_restart(
    faults: FaultPlatform,
    paths: list[list[LatLng]],
    component: str,
    report_file: Path,
    record: Record,
    felt: Callable[[Scenario, int, int], bool] | None = None,
    mid_round: bool = False,
) -> FaultReport:
    """Warm up, SIGKILL ``component`` (``mid_round``: tracking, frozen while it holds ping
    entries read and not acked), wait until the clients feel it, start it again, finish,
    publish the report."""
    async with Scenario(faults, paths, component) as scenario, _explained(faults):
        await scenario.warm_up()
        reconnects, retries = scenario.driver_reconnects(), scenario.calls_retried()
        if mid_round:
            await scenario.freeze_mid_round(faults)
        began = scenario.fault_begins()
        faults.kill(component)
        try:
            if felt is not None:
                await scenario.noticed(component, lambda: felt(scenario, reconnects, retries))
        finally:  # back in any case: the next tests need it
            restarting = time.monotonic()
            await faults.restart(component)
        report = await scenario.finish(began, restarting, time.monotonic())
        _publish(scenario, report, report_file, record)
    return report


async def test_redis_crash_loses_no_acked_fix_order_or_proof(
    faults: FaultPlatform,
    paths: list[list[LatLng]],
    report_file: Path,
    record_property: Record,
) -> None:
    report = await _crash_and_restart(
        faults,
        paths,
        "redis",
        report_file,
        record_property,
        # Down until every driver's stream broke and a reconnect failed (backoff at work).
        felt=lambda s, _, __: s.every_driver_cut_off(times=2),
    )
    assert report.driver_reconnects > 0


async def test_postgres_crash_loses_no_acked_fix_order_or_proof(
    faults: FaultPlatform,
    paths: list[list[LatLng]],
    report_file: Path,
    record_property: Record,
) -> None:
    report = await _crash_and_restart(
        faults,
        paths,
        "postgres",
        report_file,
        record_property,
        # Down until order calls answered UNAVAILABLE and were retried a few times.
        felt=lambda s, _, retries: s.calls_retried() >= retries + 3,
    )
    assert report.client_retries > 0


@pytest.mark.parametrize("service", ["gateway", "tracking", "dispatch", "pod"])
async def test_service_killed_and_restarted_loses_nothing(
    faults: FaultPlatform,
    paths: list[list[LatLng]],
    report_file: Path,
    record_property: Record,
    service: str,
) -> None:
    logged = faults.log_size(service)
    tracking = service == "tracking"
    await _crash_and_restart(
        faults, paths, service, report_file, record_property, mid_round=tracking
    )
    if tracking:
        # Killed with entries read and not acked: its successor claimed them (and the
        # scenario saw every ping entry acked in the end).
        assert "claimed pending entries" in faults.log_since(service, logged)


async def test_edge_killed_and_restarted_every_client_comes_back(
    faults: FaultPlatform,
    paths: list[list[LatLng]],
    report_file: Path,
    record_property: Record,
) -> None:
    report = await _crash_and_restart(faults, paths, "envoy", report_file, record_property)
    assert report.driver_reconnects >= 1
