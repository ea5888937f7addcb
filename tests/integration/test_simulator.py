"""The simulator end to end against the real platform (all four services and the Envoy edge),
through the public contracts only: the smoke scenario, returned orders driven back, and load
mode, alone and as the tracking benchmark's load generator."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path

import asyncpg
import pytest
from simulator import report
from simulator.city import City, open_roads
from simulator.cli import add_arguments, run, simulate
from simulator.connection import Connection
from simulator.load import Phase, run_plan, standalone_plans
from simulator.run import PlannedOrder, Simulation, plan_orders, rng_for
from simulator.scenario import Scenario, load

from bench.cpu_use import tree
from bench.tracking import Bench
from bench.tracking_fleet import seed
from core.geo import LatLng, haversine_m
from core.roads import RoadNetwork
from tests.helpers import async_wait_until
from tests.integration.conftest import REPO, Platform

SMOKE = REPO / "scenarios" / "smoke.toml"
ENDED = {"delivered", "failed", "returned"}


async def test_smoke_scenario_ends_every_order_and_reports(
    platform: Platform, tmp_path: Path
) -> None:
    scenario = load(SMOKE)
    lines: list[str] = []
    summary = await simulate(
        scenario, platform.settings, platform.edge_address, tmp_path, lines.append
    )

    assert lines and lines[-1].startswith("[sim ")
    # The baseline assigns through DispatchService.AssignOrder: without it nothing moves.
    assert summary["steps"]["assignment"] == "done: baseline via AssignOrder", summary["steps"]
    orders = summary["orders"]
    assert orders["placed"] == scenario.orders.max_orders
    assert set(orders["by_outcome"]) <= ENDED, summary
    assert sum(orders["by_outcome"].values()) == orders["placed"]
    assert orders["by_outcome"].get("delivered", 0) >= 1, summary
    assert summary["counts"]["proofs_confirmed"] >= orders["by_outcome"].get("delivered", 0)

    delivery = summary["time_to_delivery_s"]
    assert 0 < delivery["mean"] <= delivery["p95"] < 3 * 3600
    assert 0.0 <= summary["on_time_rate"] <= 1.0
    assert 0.0 < summary["drivers"]["utilisation"] <= 1.0
    assert 0.0 < summary["drivers"]["km_total"] < 100.0
    assert summary["pings"]["acked"] > 0
    assert summary["pings"]["acked"] <= summary["pings"]["sent"]

    written = json.loads((tmp_path / "report.json").read_text())
    assert written["orders"] == orders
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 2 and "<script" not in page


def test_city_and_order_stream_repeat_with_the_seed(roads: RoadNetwork) -> None:
    scenario = load(SMOKE)
    city = City(roads, LatLng(*scenario.center), scenario.radius_m)

    def plan(seed: int) -> tuple[list[LatLng], list[PlannedOrder]]:
        chosen = dataclasses.replace(scenario, seed=seed)
        rng = rng_for(chosen, "places")
        origins = [city.random_place(rng) for _ in range(3)]
        return origins, plan_orders(chosen, city, origins)

    first = plan(7)
    assert first == plan(7)
    assert first != plan(8)
    _, orders = first
    assert len(orders) == scenario.orders.max_orders
    for order in orders:
        assert haversine_m(order.destination, city.center) < scenario.radius_m + 200.0
        assert 0 <= order.offset_s < scenario.duration_s


def test_replayed_stream_keeps_its_times_and_places(roads: RoadNetwork) -> None:
    scenario = load(REPO / "scenarios" / "replay-sample.toml")
    city = City(roads, LatLng(*scenario.center), scenario.radius_m)
    origins = [LatLng(35.8870, 14.4700), LatLng(35.8850, 14.4760)]
    orders = plan_orders(scenario, city, origins)
    assert [o.offset_s for o in orders] == [0.0, 60.0, 150.0]
    assert [o.origin_index for o in orders] == [0, 1, 0]
    assert haversine_m(orders[0].destination, LatLng(35.8930, 14.4650)) < 100.0


def never_home(seed: int) -> Scenario:
    """The smoke city where nobody is ever home: every order fails until the platform's
    policy returns it (NOT_HOME is reattempted until the last allowed attempt)."""
    scenario = load(SMOKE)
    return dataclasses.replace(
        scenario,
        name="never-home",
        seed=seed,
        speed=60.0,
        fleet=dataclasses.replace(scenario.fleet, drivers=2, reattempt_wait_s=30.0),
        orders=dataclasses.replace(scenario.orders, max_orders=2),
        customers=dataclasses.replace(
            scenario.customers, not_home_rate=1.0, instruction_change_rate=0.0
        ),
    )


async def last_fix(dsn: str, driver_id: str) -> LatLng | None:
    """The newest position the platform stored for a driver."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT lat, lng FROM location_history WHERE driver_id = $1"
            " ORDER BY recorded_at DESC LIMIT 1",
            driver_id,
        )
    finally:
        await conn.close()
    return None if row is None else LatLng(row["lat"], row["lng"])


async def test_returned_orders_are_driven_back_to_their_origin(platform: Platform) -> None:
    scenario = never_home(11)
    city = City(open_roads(platform.settings, None), LatLng(*scenario.center), scenario.radius_m)
    connection = Connection(platform.settings, platform.addresses, scenario.tenant)
    started = time.monotonic()
    simulation = Simulation(scenario, connection, city)
    try:
        recorder = await simulation.run()
    finally:
        connection.close()
    summary = report.summarize(scenario, recorder, time.monotonic() - started)

    assert summary["orders"]["by_outcome"] == {"returned": 2}, summary
    attempts = platform.settings.max_delivery_attempts
    assert summary["failed_attempts_by_reason"] == {"NOT_HOME": 2 * attempts}
    returns = summary["returns"]
    assert returns["orders_returned"] == returns["trips_driven"] == 2, summary
    assert 0.0 < returns["km"] <= summary["drivers"]["km_total"]
    for order in recorder.orders.values():
        origin = simulation.world.return_point(order.order_id)
        assert origin is not None
        assert haversine_m(origin, simulation.world.origin_of[order.order_id].location) < 1.0
    # Each driver ends where it brought its last returned parcel back, and the platform saw
    # it get there (the idle status sends the position at once).
    by_driver = {o.driver_id: o.order_id for o in recorder.orders.values()}
    for driver in simulation.drivers:
        if driver.driver_id not in by_driver:
            continue
        origin = simulation.world.return_point(by_driver[driver.driver_id])
        assert origin is not None and not driver.returning
        assert haversine_m(driver.position, origin) < 30.0

        async def arrived(driver_id: str = driver.driver_id, at: LatLng = origin) -> bool:
            fix = await last_fix(platform.settings.database_url, driver_id)
            return fix is not None and haversine_m(fix, at) < 200.0

        await async_wait_until(arrived, 30.0, what=f"{driver.driver_id} seen back at origin")


async def history_rows(dsn: str, drivers: list[str]) -> int:
    """Fixes stored for these drivers."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM location_history WHERE driver_id = ANY($1)", drivers
            )
        )
    finally:
        await conn.close()


async def test_load_mode_drives_on_roads_and_customers_see_positions(
    platform: Platform,
) -> None:
    (plan,) = standalone_plans(platform.settings, None, 3, 3, 6.0, 1)
    plan = dataclasses.replace(plan, phase=Phase("rate", 1, 1.0, 6.0))
    figures = await run_plan(plan)

    assert figures["errors"] == 0, figures
    assert figures["orders_assigned"] == figures["connected"] == 3
    assert figures["snapshots"] == figures["track_held"] == 3
    assert 0 < figures["fixes_acked"] == figures["fixes_sent"]
    # The orders are on their way (the drivers reported the pickup), so their customers see
    # the drivers move.
    assert figures["latencies"] and all(0 <= s < 30 for s in figures["latencies"])
    assert len(figures["snapshot_waits"]) == 3 and all(
        0 < s < 30 for s in figures["snapshot_waits"]
    )

    async def stored() -> bool:
        count = await history_rows(platform.settings.database_url, list(plan.drivers))
        assert count <= figures["fixes_acked"]
        return bool(count == figures["fixes_acked"])

    await async_wait_until(stored, 30.0, what="every acked fix in the history")


def test_simulate_load_command_through_the_edge(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--load", "--drivers", "2", "--customers", "2", "--seconds", "6", "--processes", "2"]
    args = parser.parse_args([*argv, "--target", platform.edge_address])

    assert run(args, platform.settings) == 0
    figures = json.loads(capsys.readouterr().out)
    total = figures["total"]
    assert len(figures["processes"]) == 2
    assert total["errors"] == 0, figures
    assert total["connected"] == total["orders_assigned"] == total["snapshots"] == 2
    assert total["fixes_acked"] == total["fixes_sent"] > 0
    assert set(total["position_latency_ms"]) == {"p50", "p95", "p99"}
    assert total["snapshot_wait_ms"]["p50"] > 0


def test_tracking_bench_phases_run_on_load_mode(platform: Platform) -> None:
    args = argparse.Namespace(
        workers=1,
        sender_nice=7,
        warmup=1.0,
        seconds=3.0,
        rate=3,
        flood_drivers=2,
        flood_customers=2,
        hold=3,
        hold_seconds=1.0,
        ramp=0.5,
    )
    fleet = asyncio.run(seed(platform.settings, 6))
    bench = Bench(args, platform.settings, fleet)
    bench.trackers = [platform.addresses["tracking"]]
    bench.drain()  # what earlier tests sent is stored before the phase counts the history
    try:
        latency = bench.phase("latency1")
        hold = bench.phase("hold")
        # The driver side runs niced, the customer side (stamping receive times) does not.
        nice = [os.getpriority(os.PRIO_PROCESS, pid) for pid in tree(os.getpid())]
    finally:
        bench.close()

    assert latency["errors"] == 0, latency
    assert latency["driver_streams"] == latency["customer_streams"] == 3
    assert 0 < latency["sent_fixes"] == latency["acked_fixes"]
    assert latency["stored_fixes_after_drain"] == latency["acked_fixes"]
    assert latency["customer_positions"] > 0
    assert latency["customer_latency"]["p50_ms"] is not None
    # Steady latencies come after the 5-s ramp and the warm-up; the timeline covers them all.
    assert latency["customer_latency_warmup"]["p50_ms"] is not None
    timeline = latency["latency_timeline"]
    assert sum(b["positions"] for b in timeline) == latency["customer_positions"]
    assert timeline[-1]["from_s"] >= 5
    # No server groups given: whatever this test process started counts as the load.
    assert latency["cpu_cores"]["load_generator"] > 0, latency["cpu_cores"]
    assert latency["cpu_cores"]["box_busy"] >= latency["cpu_cores"]["load_generator"] * 0.9
    assert hold["errors"] == 0, hold
    assert hold["driver_streams_held"] == hold["customer_streams_held"] == 3
    assert hold["customer_snapshots"] == 3
    assert latency["track_snapshot_wait"]["p50_ms"] > 0
    assert hold["track_snapshot_wait"]["max_ms"] >= hold["track_snapshot_wait"]["p50_ms"] > 0
    assert nice.count(7) == 1, nice  # the one sender process; the one watcher is not niced
