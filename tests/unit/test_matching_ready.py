"""The instant matcher and ready times: no pickup is planned before its order is ready, and the
driver's wait at the kitchen counts in the cost (durations: straight-line metres at 10 m/s)."""

from __future__ import annotations

import pytest

from core.geo import LatLng, haversine_m
from dispatch.matching import Candidate, Job, Weights, match, matrix_points, pickup_schedule

BASE = LatLng(35.90, 14.50)


def at(east_m: float, north_m: float = 0.0) -> LatLng:
    """A point ``east_m`` east and ``north_m`` north of BASE (small offsets)."""
    return LatLng(BASE.lat + north_m / 111_320.0, BASE.lng + east_m / 90_180.0)


def durations(jobs: list[Job], drivers: list[Candidate]) -> list[list[float | None]]:
    points = matrix_points(jobs, drivers)
    return [[haversine_m(a, b) / 10.0 for b in points] for a in points]


def test_schedule_picks_up_at_the_later_of_arrival_and_ready() -> None:
    # Reaches the first kitchen at 100 s, its order is ready at 400 s: waits 300 s; the second
    # kitchen is 50 s on (450 s), its order ready at 200 s: no wait.
    schedule = pickup_schedule(100.0, [50.0], [400.0, 200.0])
    assert schedule.arrivals == (100.0, 450.0)
    assert schedule.pickups == (400.0, 450.0)
    assert schedule.wait_s == 300.0
    # Ready long ago: picked up on arrival, no wait.
    assert pickup_schedule(120.0, [], [0.0]) == ((120.0,), (120.0,), 0.0)
    with pytest.raises(ValueError, match="one leg"):
        pickup_schedule(1.0, [], [1.0, 2.0])


@pytest.mark.parametrize("ready_in_s", [0.0, 30.0, 90.0, 600.0, 3600.0])
def test_no_offer_plans_a_pickup_before_the_order_is_ready(ready_in_s: float) -> None:
    jobs = [
        Job("o1", at(0), at(3000), ready_in_s=ready_in_s),
        Job("o2", at(50), at(3050), ready_in_s=ready_in_s / 2),
        Job("o3", at(-2000), at(-2000, 2000)),
    ]
    drivers = [Candidate("d1", at(600)), Candidate("d2", at(-1500)), Candidate("d3", at(100))]
    offers = match(jobs, drivers, durations(jobs, drivers), Weights())
    ready = {j.order_id: j.ready_in_s for j in jobs}
    assert {o for a in offers for o in a.order_ids} == {"o1", "o2", "o3"}
    for offer in offers:
        assert len(offer.pickup_at_s) == len(offer.arrival_s) == len(offer.order_ids)
        for order_id, arrival, pickup in zip(
            offer.order_ids, offer.arrival_s, offer.pickup_at_s, strict=True
        ):
            assert pickup >= ready[order_id] - 0.05  # rounded to 0.1 s
            assert pickup >= arrival
        assert offer.arrival_s[0] == offer.pickup_s
        waited = sum(p - a for a, p in zip(offer.arrival_s, offer.pickup_at_s, strict=True))
        assert offer.wait_s == pytest.approx(waited, abs=0.2)


def test_waiting_at_the_kitchen_counts_in_the_cost() -> None:
    # The order is ready in 10 minutes. The near driver (100 s away) would wait 500 s, the far
    # one (400 s away) 200 s.
    jobs = [Job("o1", at(0), at(3000), ready_in_s=600.0)]
    drivers = [Candidate("near", at(1000)), Candidate("far", at(-4000))]
    table = durations(jobs, drivers)

    [offer] = match(jobs, drivers, table, Weights(wait_weight=0.2))
    assert offer.driver_id == "near"
    assert (offer.pickup_s, offer.wait_s) == pytest.approx((100.0, 500.0), abs=0.5)
    assert offer.score == pytest.approx(100.0 + 0.2 * 500.0, abs=0.5)

    # When a minute of waiting costs more than a minute of driving, the far driver, who
    # arrives closer to the ready time, is cheaper: 400 + 2 x 200 < 100 + 2 x 500.
    [offer] = match(jobs, drivers, table, Weights(wait_weight=2.0))
    assert offer.driver_id == "far"
    assert (offer.pickup_s, offer.wait_s) == pytest.approx((400.0, 200.0), abs=0.5)
    assert offer.pickup_at_s == (600.0,)
