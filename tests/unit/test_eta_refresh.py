"""When ETAs are recomputed: moved enough, old, or orders changed; never per ping."""

from __future__ import annotations

import datetime as dt

from core.geo import LatLng, haversine_m
from core.settings import Settings
from tracking.eta_refresh import RefreshPolicy
from tracking.positions import PositionUpdate

START = LatLng(35.8960, 14.5110)
SETTINGS = Settings.from_env({}).replace(
    eta_refresh_distance_m=150.0, eta_refresh_interval_s=30.0, eta_max_routes_per_batch=2
)
ORDERS = "o1:4"


def _north(metres: float) -> LatLng:
    moved = LatLng(START.lat + metres / 111_195.0, START.lng)
    assert abs(haversine_m(START, moved) - metres) < 1.0
    return moved


def _at(driver_id: str, position: LatLng) -> PositionUpdate:
    return PositionUpdate(
        driver_id=driver_id,
        at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
        position=position,
        snapped=None,
        speed_mps=8.0,
        heading_deg=0.0,
        status=0,
        current_order_id="o1",
        current_stop_id="",
        fixes=(),
    )


def _due(policy: RefreshPolicy, updates: list[PositionUpdate], now_s: float) -> list[str]:
    orders = {u.driver_id: ORDERS for u in updates}
    return [u.driver_id for u in policy.due(updates, orders, now_s)]


def test_a_driver_is_routed_again_only_once_it_moved_enough_or_the_eta_is_old() -> None:
    policy = RefreshPolicy(SETTINGS)
    first = _at("d1", START)
    assert _due(policy, [first], 1000.0) == ["d1"]  # new to this process
    policy.computed([first], {"d1": ORDERS}, 1000.0)
    near = _at("d1", _north(140.0))
    far = _at("d1", _north(160.0))
    assert _due(policy, [near], 1010.0) == []  # the pings between refreshes cost nothing
    assert _due(policy, [far], 1010.0) == ["d1"]
    assert _due(policy, [near], 1030.0) == ["d1"]  # the interval passed


def test_changed_orders_are_routed_at_once() -> None:
    policy = RefreshPolicy(SETTINGS)
    update = _at("d1", START)
    policy.computed([update], {"d1": ORDERS}, 1000.0)
    assert policy.due([update], {"d1": "o1:5"}, 1001.0) == [update]  # picked up
    assert policy.due([update], {"d1": "o1:4,o2:3"}, 1001.0) == [update]  # a second order


def test_a_batch_routes_at_most_its_bound_stalest_first() -> None:
    policy = RefreshPolicy(SETTINGS)
    old, older = _at("old", START), _at("older", START)
    policy.computed([older], {"older": ORDERS}, 1000.0)
    policy.computed([old], {"old": ORDERS}, 1010.0)
    moved = _north(500.0)
    batch = [_at("old", moved), _at("older", moved), _at("new", START)]
    assert _due(policy, batch, 1020.0) == ["new", "older"]


def test_marks_older_than_the_interval_are_dropped() -> None:
    policy = RefreshPolicy(SETTINGS)
    policy.computed(
        [_at(f"d{i}", START) for i in range(100)], {f"d{i}": ORDERS for i in range(100)}, 1000.0
    )
    policy.computed([_at("late", START)], {"late": ORDERS}, 1020.0)
    assert len(policy) == 101
    policy.computed([_at("later", START)], {"later": ORDERS}, 1031.0)
    assert len(policy) == 2  # the hundred from 1000 s decided nothing any more
