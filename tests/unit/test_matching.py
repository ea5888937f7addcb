"""The instant matcher: nearest first, free drivers first, batching within the detour limit,
exclusions, loads, determinism (durations: straight-line metres at 10 m/s)."""

from __future__ import annotations

import pytest

from core.geo import LatLng, haversine_m
from dispatch.matching import Candidate, Job, Weights, match, matrix_points

BASE = LatLng(35.90, 14.50)
WEIGHTS = Weights()


def at(east_m: float, north_m: float = 0.0) -> LatLng:
    """A point ``east_m`` east and ``north_m`` north of BASE (small offsets)."""
    return LatLng(BASE.lat + north_m / 111_320.0, BASE.lng + east_m / 90_180.0)


def durations(
    jobs: list[Job], drivers: list[Candidate], unreachable: frozenset[int] = frozenset()
) -> list[list[float | None]]:
    """A matrix over matrix_points; rows/columns of ``unreachable`` points have no road."""
    points = matrix_points(jobs, drivers)
    return [
        [
            None if (i in unreachable or j in unreachable) and i != j else haversine_m(a, b) / 10.0
            for j, b in enumerate(points)
        ]
        for i, a in enumerate(points)
    ]


def run(jobs: list[Job], drivers: list[Candidate], **kwargs: object) -> list[tuple[str, ...]]:
    weights = kwargs.pop("weights", WEIGHTS)
    assert isinstance(weights, Weights)
    excluded = kwargs.pop("excluded", None)
    result = match(jobs, drivers, durations(jobs, drivers), weights, excluded)  # type: ignore[arg-type]
    return [(a.driver_id, *a.order_ids) for a in result]


def test_single_order_goes_to_the_nearest_driver() -> None:
    jobs = [Job("o1", at(0), at(3000))]
    drivers = [Candidate("far", at(-2000)), Candidate("near", at(300)), Candidate("mid", at(900))]
    assert run(jobs, drivers) == [("near", "o1")]


def test_free_driver_preferred_over_a_closer_busy_one() -> None:
    jobs = [Job("o1", at(0), at(3000))]
    drivers = [Candidate("busy", at(100), load=1), Candidate("free", at(1500))]
    assert run(jobs, drivers) == [("free", "o1")]  # by default busy drivers get nothing
    assert run(jobs, drivers, weights=Weights(max_load=2)) == [("free", "o1")]
    # Without a spread penalty the closer busy driver wins.
    assert run(jobs, drivers, weights=Weights(max_load=2, spread_s=0.0)) == [("busy", "o1")]


def test_orders_spread_over_drivers_minimising_total_drive() -> None:
    # Greedy in order would give o1 to d1 (closest) and leave o2 with the far d2; the
    # assignment gives each order the driver that makes the total drive least.
    jobs = [Job("o1", at(0), at(0, 3000)), Job("o2", at(1000), at(1000, -3000))]
    drivers = [Candidate("d1", at(900)), Candidate("d2", at(-300))]
    assert run(jobs, drivers) == [("d1", "o2"), ("d2", "o1")]


def test_nearby_pickups_and_drop_offs_are_batched_on_one_driver() -> None:
    jobs = [Job("o1", at(0), at(4000)), Job("o2", at(50), at(4100, 100))]
    drivers = [Candidate("d1", at(-200)), Candidate("d2", at(-400))]
    result = match(jobs, drivers, durations(jobs, drivers), WEIGHTS)
    assert [(a.driver_id, a.order_ids) for a in result] == [("d1", ("o1", "o2"))]
    assert result[0].saving_s > 300.0
    assert result[0].drop_off_order == ("o1", "o2")


def test_no_batch_when_drop_offs_are_apart_or_batching_is_off() -> None:
    apart = [Job("o1", at(0), at(4000)), Job("o2", at(50), at(-4000))]
    drivers = [Candidate("d1", at(-200)), Candidate("d2", at(-400))]
    assert sorted(run(apart, drivers)) == [("d1", "o1"), ("d2", "o2")] or sorted(
        run(apart, drivers)
    ) == [("d1", "o2"), ("d2", "o1")]
    assert all(len(a) == 2 for a in run(apart, drivers))
    close = [Job("o1", at(0), at(4000)), Job("o2", at(50), at(4100, 100))]
    assert all(len(a) == 2 for a in run(close, drivers, weights=Weights(max_batch=1)))


def test_detour_limit_blocks_a_batch_that_delays_an_order_too_much() -> None:
    # o2's door is 1.5 km beside o1's: via o1's door o2 arrives ~115 s later than alone:
    # batched at a 420 s limit, not at 60 s.
    jobs = [Job("o1", at(0), at(3000)), Job("o2", at(0, 30), at(3000, 1500))]
    drivers = [Candidate("d1", at(-200)), Candidate("d2", at(-300))]
    assert len(run(jobs, drivers)) == 1
    assert len(run(jobs, drivers, weights=Weights(max_detour_s=60.0))) == 2


def test_excluded_driver_is_skipped_for_that_order() -> None:
    jobs = [Job("o1", at(0), at(3000))]
    drivers = [Candidate("near", at(100)), Candidate("next", at(700))]
    assert run(jobs, drivers, excluded={"o1": frozenset({"near"})}) == [("next", "o1")]
    assert run(jobs, drivers, excluded={"o1": frozenset({"near", "next"})}) == []


def test_driver_at_max_load_and_unreachable_driver_get_nothing() -> None:
    jobs = [Job("o1", at(0), at(3000))]
    full = [Candidate("full", at(10), load=2)]
    assert run(jobs, full) == []
    drivers = [Candidate("island", at(10)), Candidate("road", at(800))]
    # Point 0 (the first driver by id, "island") has no road to anything.
    table = durations(jobs, drivers, unreachable=frozenset({0}))
    assert [a.driver_id for a in match(jobs, drivers, table, WEIGHTS)] == ["road"]


def test_older_order_served_first_when_drivers_are_few() -> None:
    jobs = [
        Job("new", at(200), at(200, 3000)),
        Job("old", at(900), at(900, -3000), waiting_s=600.0),
    ]
    drivers = [Candidate("d1", at(0))]
    assert run(jobs, drivers, weights=Weights(max_batch=1)) == [("d1", "old")]
    assert run(jobs, drivers, weights=Weights(max_batch=1, age_weight=0.0)) == [("d1", "new")]


def test_more_orders_than_drivers_leaves_the_rest_for_the_next_round() -> None:
    jobs = [Job(f"o{i}", at(i * 2000), at(i * 2000, 3000)) for i in range(3)]
    drivers = [Candidate("d1", at(0)), Candidate("d2", at(4000))]
    assert run(jobs, drivers, weights=Weights(max_batch=1)) == [("d1", "o0"), ("d2", "o2")]


def test_same_answer_whatever_the_input_order() -> None:
    jobs = [Job(f"o{i}", at(i * 300), at(i * 300, 2500 + i * 50)) for i in range(6)]
    drivers = [Candidate(f"d{i}", at(i * 450 - 500), load=i % 2) for i in range(5)]
    first = run(jobs, drivers)
    assert first == run(list(reversed(jobs)), list(reversed(drivers)))
    assert len({o for a in first for o in a[1:]}) == sum(len(a) - 1 for a in first)


def test_matrix_of_the_wrong_size_is_refused() -> None:
    jobs = [Job("o1", at(0), at(3000))]
    drivers = [Candidate("d1", at(100))]
    with pytest.raises(ValueError, match="3x3"):
        match(jobs, drivers, [[0.0]], WEIGHTS)
    assert match([], drivers, [], WEIGHTS) == []
