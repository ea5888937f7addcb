"""The instant matcher (pure): orders and candidate drivers in, offers with scores out.

One micro-batch is matched in two steps, both deterministic (inputs are sorted by id):

1. **Batching** (greedy savings): orders are grouped into bundles served by one driver when
   their pickups are close and their drop-offs lie on the way: pickups first (in the order
   the bundle was built), then drop-offs nearest first. Two bundles merge when the merged
   tour is shorter than the two tours apart (a saving of at least ``min_batch_saving_s``)
   and no order of it reaches its door more than ``max_detour_s`` later than on its own.
   The largest saving merges first.
2. **Assignment**: bundles x drivers as a linear assignment problem (OR-Tools), one bundle per
   driver per round. The cost of giving bundle b to driver d, in weighted seconds, is::

       pickup_weight * drive(d -> first pickup of b)
     + wait_weight * wait(d, b)                      # driver idling at the kitchens
     + spread_s * load(d)                            # free drivers first
     - batch_bonus * saving(b)                       # cheaper tours preferred
     - age_weight * waiting(b)                       # older orders first when drivers are few

   No pickup is planned before its order is ready (:func:`pickup_schedule`): the driver
   reaches the bundle's pickups one after the other and picks each order up at the later of
   its arrival and the order's ready time (its origin's ``ready_at`` or the pickup window's
   start); ``wait`` is the sum of those waits, and each delays the stops after it.

   A pair is infeasible when the driver is excluded for an order of the bundle (declined or
   let an offer expire), carries ``max_load`` orders already, or is unreachable / farther
   than ``max_pickup_s``. Unmatched bundles wait for the next round.

Durations come from one OSRM table per micro-batch over :func:`matrix_points`; ``None``
means "no road".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ortools.graph.python import linear_sum_assignment

from core.geo import LatLng

Durations = Sequence[Sequence[float | None]]
# Costs are integers for OR-Tools: weighted seconds x this.
COST_SCALE = 10
# Cost of leaving a bundle unmatched (dummy column) and of an infeasible pair: the latter is
# higher so that an infeasible pair is never preferred to waiting.
UNMATCHED_COST = 10**9
INFEASIBLE_COST = 10**10
# Added to every feasible cost so none is negative (the batching bonus can outweigh a drive).
FEASIBLE_OFFSET = 10**7


@dataclass(frozen=True, slots=True)
class Job:
    """An order waiting for a driver."""

    order_id: str
    pickup: LatLng
    drop_off: LatLng
    ready_in_s: float = 0.0
    waiting_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A driver who may get an offer: where, and how many orders it carries already."""

    driver_id: str
    position: LatLng
    load: int = 0


@dataclass(frozen=True, slots=True)
class Weights:
    """Knobs of the cost (from settings; see the module docstring)."""

    pickup_weight: float = 1.0
    wait_weight: float = 0.2
    spread_s: float = 600.0
    batch_bonus: float = 1.0
    age_weight: float = 0.5
    max_detour_s: float = 480.0
    min_batch_saving_s: float = 60.0
    max_batch: int = 3
    max_load: int = 1
    max_pickup_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """One offer to make: a driver, the bundle's orders in pickup order, the drop-offs in
    visiting order, and the figures (seconds)."""

    driver_id: str
    order_ids: tuple[str, ...]
    drop_off_order: tuple[str, ...]
    score: float
    pickup_s: float
    tour_s: float
    saving_s: float
    # Seconds the driver would wait at the pickups for orders not ready yet (sum).
    wait_s: float = 0.0
    # Per order of ``order_ids``: seconds from now until the driver reaches its pickup, and
    # until it picks it up (never before the order is ready).
    arrival_s: tuple[float, ...] = ()
    pickup_at_s: tuple[float, ...] = ()


class PickupSchedule(NamedTuple):
    """When a driver reaches each pickup of a bundle and picks the order up (seconds from
    now), and the total wait."""

    arrivals: tuple[float, ...]
    pickups: tuple[float, ...]
    wait_s: float


class _Priced(NamedTuple):
    cost: float
    drive_s: float
    schedule: PickupSchedule


@dataclass(frozen=True, slots=True)
class _Bundle:
    jobs: tuple[int, ...]  # indexes into the sorted jobs
    tour_s: float
    saving_s: float
    drop_offs: tuple[int, ...] = ()  # visiting order (empty: the single job)


def matrix_points(jobs: Sequence[Job], candidates: Sequence[Candidate]) -> list[LatLng]:
    """The points the duration matrix covers, in this order: drivers, pickups, drop-offs
    (jobs and candidates sorted by id, as :func:`match` sorts them)."""
    jobs, candidates = _sorted(jobs, candidates)
    return [c.position for c in candidates] + [j.pickup for j in jobs] + [j.drop_off for j in jobs]


def match(
    jobs: Sequence[Job],
    candidates: Sequence[Candidate],
    durations: Durations,
    weights: Weights,
    excluded: Mapping[str, frozenset[str]] | None = None,
) -> list[Assignment]:
    """Offers for this round (see the module docstring), sorted by driver id."""
    jobs, candidates = _sorted(jobs, candidates)
    if not jobs or not candidates:
        return []
    expected = len(candidates) + 2 * len(jobs)
    if len(durations) != expected or any(len(row) != expected for row in durations):
        raise ValueError(f"durations must be {expected}x{expected} (see matrix_points)")
    geometry = _Geometry(len(candidates), len(jobs), durations)
    bundles = _batch(geometry, jobs, weights)
    return _assign(geometry, jobs, candidates, bundles, weights, excluded or {})


def _sorted(
    jobs: Sequence[Job], candidates: Sequence[Candidate]
) -> tuple[list[Job], list[Candidate]]:
    return sorted(jobs, key=lambda j: j.order_id), sorted(candidates, key=lambda c: c.driver_id)


class _Geometry:
    """Durations by role: driver d, pickup of job i, drop-off of job i."""

    def __init__(self, drivers: int, jobs: int, durations: Durations) -> None:
        self._drivers, self._jobs, self._d = drivers, jobs, durations

    def pickup(self, i: int) -> int:
        return self._drivers + i

    def drop_off(self, i: int) -> int:
        return self._drivers + self._jobs + i

    def get(self, a: int, b: int) -> float | None:
        return self._d[a][b]

    def tour(self, members: Sequence[int]) -> tuple[float, dict[int, float]] | None:
        """Duration from the first pickup to the last drop-off (pickups in order, drop-offs
        nearest first) and each order's arrival at its door; None when a leg has no road."""
        stops = [self.pickup(i) for i in members]
        elapsed = 0.0
        for a, b in itertools.pairwise(stops):
            leg = self.get(a, b)
            if leg is None:
                return None
            elapsed += leg
        arrivals: dict[int, float] = {}
        here, left = stops[-1], list(members)
        while left:
            legs = [(self.get(here, self.drop_off(i)), i) for i in left]
            reachable = [(leg, i) for leg, i in legs if leg is not None]
            if len(reachable) < len(legs):
                return None
            leg, nearest = min(reachable)
            elapsed += leg
            arrivals[nearest] = elapsed
            here = self.drop_off(nearest)
            left.remove(nearest)
        return elapsed, arrivals


def _batch(geometry: _Geometry, jobs: Sequence[Job], weights: Weights) -> list[_Bundle]:
    """Greedy savings merge of single-order bundles (see the module docstring)."""
    solo: dict[int, float | None] = {}
    for i in range(len(jobs)):
        result = geometry.tour([i])
        solo[i] = None if result is None else result[0]
    bundles = [_Bundle((i,), solo[i] or 0.0, 0.0) for i in range(len(jobs))]
    while weights.max_batch > 1:
        best: tuple[float, int, int, _Bundle] | None = None
        for a, b in itertools.combinations(range(len(bundles)), 2):
            merged = _merge(geometry, bundles[a], bundles[b], solo, weights)
            if merged is not None and (best is None or merged.saving_s > best[0]):
                best = (merged.saving_s, a, b, merged)
        if best is None:
            break
        _, a, b, merged = best
        bundles = [x for k, x in enumerate(bundles) if k not in (a, b)] + [merged]
    return bundles


def _merge(
    geometry: _Geometry,
    first: _Bundle,
    second: _Bundle,
    solo: Mapping[int, float | None],
    weights: Weights,
) -> _Bundle | None:
    members = first.jobs + second.jobs
    if len(members) > weights.max_batch or any(solo[i] is None for i in members):
        return None
    result = geometry.tour(members)
    if result is None:
        return None
    tour_s, arrivals = result
    if any(arrivals[i] - (solo[i] or 0.0) > weights.max_detour_s for i in members):
        return None
    # Only the tours count: the drive to the pickup a second driver would also have made is
    # saved as well, but that depends on the driver, which the assignment prices.
    gained = first.tour_s + second.tour_s - tour_s
    if gained < weights.min_batch_saving_s:
        return None
    drop_offs = tuple(sorted(arrivals, key=lambda i: arrivals[i]))
    return _Bundle(members, tour_s, first.saving_s + second.saving_s + gained, drop_offs)


def _assign(
    geometry: _Geometry,
    jobs: Sequence[Job],
    candidates: Sequence[Candidate],
    bundles: Sequence[_Bundle],
    weights: Weights,
    excluded: Mapping[str, frozenset[str]],
) -> list[Assignment]:
    """Bundles x drivers as a square assignment problem (dummy rows/columns pad it)."""
    size = max(len(bundles), len(candidates))
    solver = linear_sum_assignment.SimpleLinearSumAssignment()
    costs: dict[tuple[int, int], _Priced] = {}
    for b, bundle in enumerate(bundles):
        for c, candidate in enumerate(candidates):
            priced = _price(geometry, jobs, bundle, c, candidate, weights, excluded)
            if priced is not None:
                costs[(b, c)] = priced
    for row in range(size):
        for col in range(size):
            if (row, col) in costs:
                cost = FEASIBLE_OFFSET + round(costs[(row, col)].cost * COST_SCALE)
            elif row < len(bundles) and col < len(candidates):
                cost = INFEASIBLE_COST
            else:
                cost = UNMATCHED_COST
            solver.add_arc_with_cost(row, col, cost)
    if solver.solve() != solver.OPTIMAL:
        return []
    result = []
    for b, bundle in enumerate(bundles):
        c = solver.right_mate(b)
        if (b, c) not in costs:
            continue  # matched to a dummy or an infeasible driver: waits for the next round
        priced = costs[(b, c)]
        result.append(
            Assignment(
                driver_id=candidates[c].driver_id,
                order_ids=tuple(jobs[i].order_id for i in bundle.jobs),
                drop_off_order=tuple(jobs[i].order_id for i in bundle.drop_offs or bundle.jobs),
                score=round(priced.cost, 1),
                pickup_s=round(priced.drive_s, 1),
                tour_s=round(bundle.tour_s, 1),
                saving_s=round(bundle.saving_s, 1),
                wait_s=round(priced.schedule.wait_s, 1),
                arrival_s=tuple(round(t, 1) for t in priced.schedule.arrivals),
                pickup_at_s=tuple(round(t, 1) for t in priced.schedule.pickups),
            )
        )
    return sorted(result, key=lambda a: a.driver_id)


def _price(
    geometry: _Geometry,
    jobs: Sequence[Job],
    bundle: _Bundle,
    column: int,
    candidate: Candidate,
    weights: Weights,
    excluded: Mapping[str, frozenset[str]],
) -> _Priced | None:
    """Cost, drive to the first pickup and pickup schedule of the pair; None when
    infeasible."""
    # A bundle may fill a free driver beyond max_load; a busy one only up to it.
    if candidate.load >= weights.max_load or (
        candidate.load > 0 and candidate.load + len(bundle.jobs) > weights.max_load
    ):
        return None
    if any(candidate.driver_id in excluded.get(jobs[i].order_id, frozenset()) for i in bundle.jobs):
        return None
    drive = geometry.get(column, geometry.pickup(bundle.jobs[0]))
    if drive is None or drive > weights.max_pickup_s:
        return None
    legs = [
        geometry.get(geometry.pickup(a), geometry.pickup(b))
        for a, b in itertools.pairwise(bundle.jobs)
    ]
    if any(leg is None for leg in legs):
        return None
    schedule = pickup_schedule(
        drive, [leg or 0.0 for leg in legs], [jobs[i].ready_in_s for i in bundle.jobs]
    )
    cost = (
        weights.pickup_weight * drive
        + weights.wait_weight * schedule.wait_s
        + weights.spread_s * candidate.load
        - weights.batch_bonus * bundle.saving_s
        - weights.age_weight * max(jobs[i].waiting_s for i in bundle.jobs)
    )
    return _Priced(cost, drive, schedule)


def pickup_schedule(
    drive_s: float, legs_s: Sequence[float], ready_in_s: Sequence[float]
) -> PickupSchedule:
    """Arrival and pickup at each pickup of a bundle, in seconds from now: the driver reaches
    the first after ``drive_s`` and each next one ``legs_s`` later, and picks each order up
    at the later of its arrival and its ``ready_in_s`` (never before it is ready); waiting
    delays everything after it."""
    if len(legs_s) != len(ready_in_s) - 1:
        raise ValueError("legs_s must hold one leg between each two pickups")
    arrivals: list[float] = []
    pickups: list[float] = []
    at = drive_s
    for k, ready in enumerate(ready_in_s):
        if k:
            at = pickups[-1] + legs_s[k - 1]
        arrivals.append(at)
        pickups.append(max(at, ready))
    wait = sum(p - a for a, p in zip(arrivals, pickups, strict=True))
    return PickupSchedule(tuple(arrivals), tuple(pickups), wait)
