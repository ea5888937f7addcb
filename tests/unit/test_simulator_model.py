"""The simulator's pure parts: scenarios, replay files, the order-rate curve, the GPS noise
model, motion along a route, proof photos, the report's figures; and seed reproducibility."""

from __future__ import annotations

import datetime as dt
import io
import random
import statistics
from pathlib import Path

import pytest
from PIL import Image
from simulator import curve, report
from simulator.gps import GpsNoise, RoutePath, offset
from simulator.metrics import OrderRecord, Recorder
from simulator.proofs import photo
from simulator.scenario import Orders, ScenarioError, load, parse, read_replay

from core.geo import LatLng, haversine_m
from pod.checks import read_exif

REPO = Path(__file__).resolve().parents[2]
VALLETTA = LatLng(35.8989, 14.5146)


@pytest.mark.parametrize("name", ["smoke", "malta-lunch", "demo", "replay-sample"])
def test_shipped_scenarios_parse(name: str) -> None:
    scenario = load(REPO / "scenarios" / f"{name}.toml")
    assert scenario.name == name
    assert scenario.fleet.drivers >= 1


def test_scenario_tables_and_defaults() -> None:
    scenario = parse(
        'name = "x"\nseed = 3\nspeed = 10\ncenter = [35.9, 14.5]\n'
        "[fleet]\ndrivers = 7\n[customers]\nnot_home_rate = 0.2\n"
    )
    assert (scenario.seed, scenario.speed, scenario.center) == (3, 10.0, (35.9, 14.5))
    assert scenario.fleet.drivers == 7 and scenario.fleet.capacity == 4
    assert scenario.customers.not_home_rate == 0.2
    assert scenario.start_s == 11 * 3600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "colour: unknown key"),
        ("[fleet]\nwheels = 4", "fleet.wheels: unknown key"),
        ('seed = "seven"', "seed: expected int"),
        ("center = [1.0]", "center: expected a list of 2 numbers"),
        ('policy = "random"', "policy: one of baseline, platform"),
        ("[customers]\nnot_home_rate = 1.5", "customers.not_home_rate: a rate between 0 and 1"),
        ('start = "25:00"', "start: HH:MM"),
        ("speed = 0", "speed, duration_s and radius_m must be positive"),
        ("[origins]\nprep_min_s = 10.0\nprep_max_s = 5.0", "prep_min_s must not exceed"),
        ("seed = ", "not valid TOML"),
    ],
)
def test_bad_scenarios_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(text)


def test_replay_csv(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "offset_s,origin_lat,origin_lng,dest_lat,dest_lng,window_s\n"
        "60,35.9,14.5,35.91,14.49,1800\n0,35.9,14.5,35.89,14.48,900\n"
    )
    orders = read_replay(path)
    assert [o.offset_s for o in orders] == [0.0, 60.0]
    assert orders[0].destination == (35.89, 14.48) and orders[0].window_s == 900.0
    path.write_text("offset_s,origin_lat\n1,2\n")
    with pytest.raises(ScenarioError, match="header must be"):
        read_replay(path)
    path.write_text(
        "offset_s,origin_lat,origin_lng,dest_lat,dest_lng,window_s\n0,35.9,x,35.8,14.4,60\n"
    )
    with pytest.raises(ScenarioError, match=r"orders.csv:2: every column must be a number"):
        read_replay(path)


def test_rate_curve_has_lunch_and_dinner_peaks() -> None:
    orders = Orders(base_per_hour=10, lunch_peak_per_hour=50, dinner_peak_per_hour=80)
    at = {h: curve.rate_per_hour(orders, h * 3600.0) for h in (4, 10, 12.5, 16, 19.5)}
    assert at[4] == pytest.approx(10.0, abs=0.01)
    assert at[12.5] == pytest.approx(60.0, abs=0.5)
    assert at[19.5] == pytest.approx(90.0, abs=0.5)
    assert at[10] < at[12.5] and at[16] < at[12.5] < at[19.5]


def test_arrivals_follow_the_curve_and_repeat_with_the_seed() -> None:
    orders = Orders(base_per_hour=0, lunch_peak_per_hour=120, dinner_peak_per_hour=0)
    day = curve.arrivals(orders, 0.0, 86400.0, random.Random(5))
    assert day == curve.arrivals(orders, 0.0, 86400.0, random.Random(5))
    assert day != curve.arrivals(orders, 0.0, 86400.0, random.Random(6))
    # Around 120 * sqrt(2 pi) ~ 300 orders, nearly all within two hours of 12:30.
    assert 200 < len(day) < 400
    near_lunch = [t for t in day if abs(t - curve.LUNCH_PEAK_S) < 2 * 3600]
    assert len(near_lunch) > 0.9 * len(day)
    capped = Orders(base_per_hour=3600, lunch_peak_per_hour=0, dinner_peak_per_hour=0, max_orders=5)
    assert len(curve.arrivals(capped, 0.0, 3600.0, random.Random(1))) == 5


def test_gps_noise_has_the_configured_spread() -> None:
    noise = GpsNoise(sigma_m=5.0, outlier_rate=0.0, rng=random.Random(1))
    fixes = [noise.observe(VALLETTA, 8.0, 90.0) for _ in range(4000)]
    errors = [haversine_m(VALLETTA, f.position) for f in fixes]
    # The distance of a 2-D Gaussian error is Rayleigh: mean sigma * sqrt(pi / 2) ~ 6.27 m.
    assert statistics.mean(errors) == pytest.approx(6.27, rel=0.06)
    assert max(errors) < 40.0
    assert {f.accuracy_m for f in fixes} == {5.0} and fixes[0].speed_mps == 8.0
    wild = GpsNoise(sigma_m=5.0, outlier_rate=1.0, rng=random.Random(1))
    far = [haversine_m(VALLETTA, wild.observe(VALLETTA, 0, 0).position) for _ in range(500)]
    assert statistics.mean(far) > 40.0


def test_gps_noise_repeats_with_the_seed() -> None:
    def run(seed: int) -> list[LatLng]:
        noise = GpsNoise(5.0, 0.01, random.Random(seed))
        return [noise.observe(VALLETTA, 1.0, 0.0).position for _ in range(50)]

    assert run(9) == run(9) and run(9) != run(10)


def test_route_path_positions_and_speeds() -> None:
    east = offset(VALLETTA, 0.0, 1000.0)
    north = offset(east, 1000.0, 0.0)
    path = RoutePath([VALLETTA, east, north], [(0.0, 10.0), (1000.0, 20.0)])
    assert path.length_m == pytest.approx(2000.0, rel=0.01)
    middle, heading = path.position_at(500.0)
    assert haversine_m(middle, VALLETTA) == pytest.approx(500.0, rel=0.01)
    assert heading == pytest.approx(90.0, abs=1.0)
    assert path.speed_at(10.0) == 10.0 and path.speed_at(1500.0) == 20.0
    end, heading = path.position_at(5000.0)
    assert end == north and heading == pytest.approx(0.0, abs=1.0)


def test_proof_photo_carries_time_and_place_the_platform_reads() -> None:
    taken = dt.datetime(2026, 5, 1, 12, 30, 15, tzinfo=dt.UTC)
    data = photo(VALLETTA, taken, random.Random(1))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        exif = read_exif(image)
    assert exif is not None and exif.taken_at == taken
    assert exif.position is not None
    assert haversine_m(exif.position, VALLETTA) < 1.0


def test_report_figures(tmp_path: Path) -> None:
    recorder = Recorder()
    for i, (created, delivered, window_end) in enumerate([(0, 600, 900), (60, 1260, 1000)]):
        record = OrderRecord(f"o{i}", "origin", created, window_end, outcome="delivered")
        record.delivered_s = record.arrived_s = float(delivered)
        record.eta_samples = [(created + 100.0, delivered - 30.0)]
        recorder.orders[record.order_id] = record
    failed = OrderRecord("o2", "origin", 0, 900, outcome="returned", failures=["NOT_HOME"] * 3)
    recorder.orders["o2"] = failed
    recorder.driver("d1").distance_m, recorder.driver("d1").busy_s = 4200.0, 600.0
    scenario = parse("speed = 10")
    summary = report.summarize(scenario, recorder, wall_s=120.0)
    assert summary["orders"]["by_outcome"] == {"delivered": 2, "returned": 1}
    assert summary["on_time_rate"] == 0.5
    assert summary["time_to_delivery_s"]["mean"] == 900.0
    assert summary["time_to_delivery_s"]["p95"] == pytest.approx(1170.0)
    assert summary["drivers"]["utilisation"] == pytest.approx(0.5)
    assert summary["drivers"]["km_total"] == pytest.approx(4.2)
    assert summary["eta_error_s"]["mean"] == pytest.approx(30.0)
    assert summary["failed_attempts_by_reason"] == {"NOT_HOME": 3}
    json_path, html_path = report.write(summary, tmp_path)
    page = html_path.read_text()
    assert json_path.is_file() and page.count("<svg") == 2 and "<script" not in page
