"""Route re-optimization: the first stop stays, windows hold, impossible orders are rejected."""

from __future__ import annotations

import numpy as np

from dispatch.solver.reoptimize import (
    NewOrder,
    RouteUnderWay,
    Stop,
    StopKind,
    reoptimize,
)

# Places 0..9 on a straight road, one minute apart; the driver is at place 0.
LINE = np.array([[60.0 * abs(a - b) for b in range(10)] for a in range(10)])


def _drop(key: str, place: int, due: float = 1e9, ready: float = 0.0) -> Stop:
    return Stop(key, key, StopKind.DROPOFF, place, ready, due, 30.0, -1)


def _arrivals(route: RouteUnderWay, stops: list[Stop]) -> list[float]:
    time, place, out = route.now, route.position, []
    for stop in stops:
        time = max(time + LINE[place, stop.location], stop.ready)
        out.append(time)
        time += stop.service
        place = stop.location
    return out


def test_first_stop_never_moves_even_when_a_new_order_is_right_here() -> None:
    route = RouteUnderWay(0.0, 0, [_drop("a", 9), _drop("b", 5)], capacity=5, load=2)
    order = NewOrder(
        "n",
        (
            Stop("n-p", "n", StopKind.PICKUP, 1, service=30.0, load=1),
            Stop("n-d", "n", StopKind.DROPOFF, 2, service=30.0, load=-1),
        ),
    )
    result = reoptimize(route, [order], LINE)
    assert result.stops[0].key == "a"
    assert not result.rejected
    keys = [s.key for s in result.stops]
    assert keys.index("n-p") < keys.index("n-d")


def test_windows_are_respected_after_insertion_and_local_search() -> None:
    stops = [_drop("a", 2, due=200), _drop("b", 8, due=900), _drop("c", 4, due=1200)]
    # The new drop-off's parcel is already on board, so it counts in the load.
    route = RouteUnderWay(0.0, 0, stops, capacity=5, load=4)
    order = NewOrder("n", (_drop("n", 3, due=400),))
    result = reoptimize(route, [order], LINE, move_penalty=1.0)
    assert next(s.key for s in result.stops) == "a" and not result.rejected
    for stop, arrival in zip(result.stops, _arrivals(route, result.stops), strict=True):
        assert arrival <= stop.due, (stop.key, arrival)


def test_an_order_that_cannot_fit_its_window_is_rejected_and_the_route_kept() -> None:
    stops = [_drop("a", 5), _drop("b", 6)]
    route = RouteUnderWay(0.0, 0, stops, capacity=5, load=2)
    late = NewOrder("late", (_drop("late", 9, due=100),))  # 9 minutes away, due in 100 s
    result = reoptimize(route, [late], LINE)
    assert result.rejected == ["late"]
    assert [s.key for s in result.stops] == ["a", "b"]


def test_capacity_rejects_a_pickup_that_would_overload() -> None:
    route = RouteUnderWay(0.0, 0, [_drop("a", 5)], capacity=1, load=1)
    heavy = NewOrder(
        "h",
        (
            Stop("h-p", "h", StopKind.PICKUP, 1, load=1),
            Stop("h-d", "h", StopKind.DROPOFF, 2, load=-1),
        ),
    )
    result = reoptimize(route, [heavy], LINE)
    # After dropping "a" the van is empty, so the pair goes after it, not before.
    assert [s.key for s in result.stops] == ["a", "h-p", "h-d"]
    full = RouteUnderWay(0.0, 0, [_drop("a", 5)], capacity=0, load=0)
    assert reoptimize(full, [heavy], LINE).rejected == ["h"]


def test_existing_stops_are_not_reshuffled_for_a_small_gain() -> None:
    stops = [_drop("a", 1), _drop("b", 3), _drop("c", 2), _drop("d", 4)]
    route = RouteUnderWay(0.0, 0, stops, capacity=9, load=4)
    kept = reoptimize(route, [], LINE, move_penalty=1000.0)
    assert [s.key for s in kept.stops] == ["a", "b", "c", "d"]
    improved = reoptimize(route, [], LINE, move_penalty=1.0)
    assert [s.key for s in improved.stops] == ["a", "c", "b", "d"]
    assert improved.travel < kept.travel
