"""Re-optimizing a route under way when new orders join it (pure: no I/O, no clock).

The stop the driver is driving to stays first. New orders go in by cheapest feasible
insertion (a pickup and its drop-off together, pickup first), then a bounded relocate search
improves the order while charging every position an original stop moves away from its old
place, so the driver's plan changes no more than it pays off. A route that is already late
is allowed to stay as late as it is, never later; an order that cannot go in without making
it worse is rejected, and the rest of the route is returned unchanged by it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.solver.model import FloatMatrix


class StopKind(enum.Enum):
    """Whether goods come on board or leave the vehicle at the stop."""

    PICKUP = "pickup"
    DROPOFF = "dropoff"


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop on a route: where (matrix index), when (window, service) and the load change.

    ``load`` is positive for a pickup and negative for a drop-off; a drop-off without a
    pickup on the route is for goods already on board (counted in RouteUnderWay.load).
    """

    key: str
    order_id: str
    kind: StopKind
    location: int
    ready: float = 0.0
    due: float = float("inf")
    service: float = 0.0
    load: int = 0


@dataclass(frozen=True)
class RouteUnderWay:
    """A driver's route now: position, load on board and the stops left (``stops[0]`` is the
    one being driven to). ``end`` is where the route must finish (None: at the last stop)."""

    now: float
    position: int
    stops: Sequence[Stop]
    capacity: int
    load: int
    end: int | None = None
    end_due: float = float("inf")


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order to add: (pickup, drop-off) or (drop-off,) for goods already on board."""

    order_id: str
    stops: tuple[Stop, ...]


@dataclass(frozen=True)
class Reoptimized:
    """The new stop order, the orders that could not be added, and the travel time."""

    stops: list[Stop]
    rejected: list[str]
    travel: float


# State before a stop: (time, place, load, travel so far, violation so far).
_State = tuple[float, int, int, float, float]


class _Evaluator:
    """Scores stop sequences of one route under way, resuming from cached prefixes."""

    def __init__(self, route: RouteUnderWay, duration: FloatMatrix) -> None:
        self.route = route
        self.duration: list[list[float]] = duration.tolist()

    def start(self) -> _State:
        """The state before the first stop: now, at the driver's position."""
        return (self.route.now, self.route.position, self.route.load, 0.0, 0.0)

    def prefixes(self, stops: Sequence[Stop]) -> list[_State]:
        """The state before each stop of ``stops`` (and after the last one)."""
        states = [self.start()]
        for stop in stops:
            states.append(self._step(states[-1], stop))
        return states

    def _step(self, state: _State, stop: Stop) -> _State:
        time, place, load, travel, violation = state
        leg = self.duration[place][stop.location]
        time = max(time + leg, stop.ready)
        late = max(0.0, time - stop.due)
        load += stop.load
        over = max(0, load - self.route.capacity) + max(0, -load)
        return (time + stop.service, stop.location, load, travel + leg, violation + late + over)

    def score(
        self, state: _State, rest: Sequence[Stop], limit: float = float("inf")
    ) -> tuple[float, float]:
        """(violation, travel) of the sequence continuing from ``state`` with ``rest``: lateness
        plus overload. Stops counting once the violation passes ``limit`` (the candidate is
        out anyway), which keeps the searches fast."""
        for stop in rest:
            state = self._step(state, stop)
            if state[4] > limit:
                return state[4], state[3]
        time, place, _, travel, violation = state
        if self.route.end is not None:
            leg = self.duration[place][self.route.end]
            travel += leg
            violation += max(0.0, time + leg - self.route.end_due)
        return violation, travel


def _precedence_ok(stops: Sequence[Stop]) -> bool:
    """No drop-off comes before the pickup of the same order."""
    dropped: set[str] = set()
    for stop in stops:
        if stop.kind is StopKind.DROPOFF:
            dropped.add(stop.order_id)
        elif stop.order_id in dropped:
            return False
    return True


def _insert(
    evaluator: _Evaluator, stops: list[Stop], order: NewOrder, allowed: float
) -> list[Stop] | None:
    """Cheapest insertion of ``order`` after the fixed first stop, or None if every place
    breaks feasibility (violation above ``allowed``)."""
    limit = allowed + 1e-9
    prefixes = evaluator.prefixes(stops)
    best: tuple[float, list[Stop]] | None = None
    first = 1 if stops else 0
    for i in range(first, len(stops) + 1):
        if len(order.stops) == 1:
            tails = [[order.stops[0], *stops[i:]]]
        else:
            pickup, dropoff = order.stops
            after = stops[i:]
            tails = [[pickup, *after[:j], dropoff, *after[j:]] for j in range(len(after) + 1)]
        for tail in tails:
            violation, travel = evaluator.score(prefixes[i], tail, limit)
            if violation <= limit and (best is None or travel < best[0]):
                best = (travel, stops[:i] + tail)
    return None if best is None else best[1]


def _relocate_pass(
    evaluator: _Evaluator,
    stops: list[Stop],
    home: dict[str, int],
    weight: float,
    allowed: float,
    reach: int,
) -> list[Stop] | None:
    """The best relocation of one stop by at most ``reach`` places (first stop fixed) that
    lowers travel plus ``weight`` per place an original stop sits away from its old one."""
    limit = allowed + 1e-9
    prefixes = evaluator.prefixes(stops)

    def moved(sequence: Sequence[Stop]) -> float:
        return weight * sum(abs(k - home[s.key]) for k, s in enumerate(sequence) if s.key in home)

    current = evaluator.score(prefixes[0], stops)[1] + moved(stops)
    best: tuple[float, list[Stop]] | None = None
    for i in range(1, len(stops)):
        rest = stops[:i] + stops[i + 1 :]
        for j in range(max(1, i - reach), min(len(stops), i + reach + 1)):
            if j == i:
                continue
            candidate = [*rest[:j], stops[i], *rest[j:]]
            low = min(i, j)
            violation, travel = evaluator.score(prefixes[low], candidate[low:], limit)
            if violation > limit or not _precedence_ok(candidate):
                continue
            value = travel + moved(candidate)
            if value < current - 1e-9 and (best is None or value < best[0]):
                best = (value, candidate)
    return None if best is None else best[1]


def reoptimize(
    route: RouteUnderWay,
    orders: Sequence[NewOrder],
    duration: FloatMatrix,
    move_penalty: float = 30.0,
    max_passes: int = 6,
    reach: int = 8,
) -> Reoptimized:
    """Add ``orders`` to ``route`` (see the module doc).

    ``move_penalty`` is the travel time (matrix units) one place of displacement of an
    existing stop must save to be worth it; ``max_passes`` and ``reach`` (how many places a
    stop may jump in one move) bound the relocate search.
    """
    evaluator = _Evaluator(route, duration)
    stops = list(route.stops)
    # Never later or fuller than the route already is (a late driver can still take orders).
    allowed = evaluator.score(evaluator.start(), stops)[0]
    home = {stop.key: k for k, stop in enumerate(stops)}
    rejected: list[str] = []
    for order in orders:
        inserted = _insert(evaluator, stops, order, allowed)
        if inserted is None:
            rejected.append(order.order_id)
        else:
            stops = inserted
    for _ in range(max_passes):
        improved = _relocate_pass(evaluator, stops, home, move_penalty, allowed, reach)
        if improved is None:
            break
        stops = improved
    return Reoptimized(stops, rejected, evaluator.score(evaluator.start(), stops)[1])
