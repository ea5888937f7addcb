"""The simulator end to end: the smoke scenario against the real platform (all four services
and the Envoy edge), through the generated betterproto clients only."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from simulator.city import City
from simulator.cli import simulate
from simulator.run import PlannedOrder, plan_orders, rng_for
from simulator.scenario import load

from core.geo import LatLng, haversine_m
from core.roads import RoadNetwork
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
