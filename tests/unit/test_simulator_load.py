"""Load mode's pure parts: motion along a road and its capture times, how a run is shared
between processes, how their figures add up; and the report's return trips."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from simulator import report
from simulator.gps import GpsNoise, RoutePath, offset
from simulator.load import merge, standalone_plans, steady_rate
from simulator.load_actors import PROBE_INTERVAL_S, Tally, Walker, probe_loop, road_seconds
from simulator.metrics import OrderRecord, Recorder
from simulator.scenario import parse

from core.geo import LatLng, haversine_m
from core.settings import Settings

START = LatLng(35.8989, 14.5146)
END = offset(START, 0.0, 100.0)  # 100 m east


def test_road_goes_there_and_back_one_second_at_a_time() -> None:
    path = RoutePath([START, END], [(0.0, 10.0)])
    road = road_seconds(path)
    assert len(road) == 20  # 200 m out and back at 10 m/s
    assert haversine_m(road[0].where, START) < 0.01
    assert haversine_m(road[10].where, END) < 0.5  # the path is 99.9 m: haversine vs offset
    assert road[1].heading_deg == pytest.approx(90.0, abs=0.1)
    assert road[11].heading_deg == pytest.approx(270.0, abs=0.1)
    steps = [haversine_m(a.where, b.where) for a, b in itertools.pairwise(road[:10])]
    assert steps == pytest.approx([10.0] * 9, abs=0.01)


def test_walker_capture_times_end_now_and_never_repeat() -> None:
    road = road_seconds(RoutePath([START, END], [(0.0, 10.0)]))
    walker = Walker(road, GpsNoise(5.0, 0.0, random.Random(1)), random.Random(2))
    first = walker.fixes(5, 1000.0)
    times = [f.captured_at.ToNanoseconds() / 1e9 for f in first]
    assert times == pytest.approx([996.0, 997.0, 998.0, 999.0, 1000.0])
    # Back-to-back batches (flood) spread over the time since the last one; even a clock
    # that did not move gives new, later capture times.
    later = walker.fixes(5, 1000.05) + walker.fixes(5, 1000.05)
    all_times = times + [f.captured_at.ToNanoseconds() / 1e9 for f in later]
    assert all(b > a for a, b in itertools.pairwise(all_times))
    assert all(f.accuracy_m == 5.0 and f.speed_mps == 10.0 for f in first + later)
    for fix in first:
        where = LatLng(fix.position.lat, fix.position.lng)
        assert min(haversine_m(where, s.where) for s in road) < 40.0  # road + GPS noise


def test_standalone_load_is_shared_between_processes() -> None:
    settings = Settings.from_env({})
    plans = standalone_plans(settings, None, 5, 7, 10.0, 2)
    assert [len(p.drivers) for p in plans] == [3, 2]
    assert [p.orders for p in plans] == [3, 2]
    assert [p.customers for p in plans] == [4, 3]
    assert len({d for p in plans for d in p.drivers}) == 5
    assert all(p.phase.mode == "rate" and p.phase.fixes_per_message == 5 for p in plans)
    # Customers follow the orders: a process without drivers has none to watch.
    plans = standalone_plans(settings, None, 1, 3, 10.0, 2)
    assert [(len(p.drivers), p.orders, p.customers) for p in plans] == [(1, 1, 3), (0, 0, 0)]
    with pytest.raises(ValueError, match="at least one driver"):
        standalone_plans(settings, None, 0, 3, 10.0, 2)


def test_figures_of_processes_add_up() -> None:
    merged = merge(
        [
            {
                "connected": 2,
                "fixes_acked": 10,
                "latencies": [0.1],
                "loop_lags": [0.002],
                "loop_lag_at": [100.5],
                "acked_by_second": {100: 4, 101: 6},
                "errors": 0,
                "wall_s": 5.0,
            },
            {
                "connected": 3,
                "fixes_acked": 5,
                "latencies": [0.2, 0.3],
                "acked_by_second": {101: 5},
                "errors": 1,
                "first_error": "boom",
                "peak_rss_kb": 900,
                "wall_s": 6.0,
            },
        ]
    )
    assert merged["connected"] == 5 and merged["fixes_acked"] == 15
    assert merged["latencies"] == [0.1, 0.2, 0.3]
    assert merged["loop_lags"] == [0.002] and merged["loop_lag_at"] == [100.5]
    assert merged["acked_by_second"] == {100: 4, 101: 11}
    assert merged["errors"] == 1 and merged["first_error"] == "boom"
    assert merged["peak_rss_kb"] == 900 and merged["wall_s"] == 6.0
    assert merge([])["errors"] == 0


def test_the_loop_probe_sees_a_busy_loop() -> None:
    async def run() -> Tally:
        tally = Tally()
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, time.sleep, 0.08)  # the loop busy: the probe's timer fires late
        await probe_loop(loop.time() + 0.3, tally)
        return tally

    tally = asyncio.run(run())
    assert len(tally.loop_lags) == len(tally.loop_lag_at) >= 0.3 / PROBE_INTERVAL_S / 2
    late = sorted(tally.loop_lags)
    assert late[-1] >= 0.06  # the blocked stretch
    assert late[len(late) // 2] < 0.01  # an idle loop otherwise


def test_steady_rate_leaves_out_the_ramp_and_the_tail() -> None:
    # A ramp (seconds 0-1), a steady 100 fixes a second (2-6), a last partial second (7).
    acked = {0: 10, 1: 50, 2: 100, 3: 100, 4: 100, 5: 100, 6: 100, 7: 30}
    assert steady_rate(acked, 2, 1) == 100.0
    assert steady_rate(acked, 0, 0) == 590 / 8
    # A second with no ack in the steady window counts as a second at zero.
    assert steady_rate({0: 100, 2: 100}, 0, 0) == 200 / 3
    assert steady_rate(acked, 5, 5) == 0.0
    assert steady_rate({}, 0, 0) == 0.0


def test_report_counts_return_trips() -> None:
    recorder = Recorder()
    recorder.orders["o1"] = OrderRecord("o1", "origin", 0, 900, outcome="returned")
    recorder.orders["o2"] = OrderRecord("o2", "origin", 0, 900, outcome="delivered")
    driver = recorder.driver("d1")
    driver.distance_m, driver.return_m = 5000.0, 1500.0
    recorder.counts["return_trips"] = 1
    summary = report.summarize(parse("speed = 10"), recorder, wall_s=60.0)
    assert summary["returns"] == {"orders_returned": 1, "trips_driven": 1, "km": 1.5}
