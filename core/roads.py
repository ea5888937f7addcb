"""The platform's only door to the road network: OSRM, in-process (PyPI osrm-bindings, CH).

Everything else (ETAs, snapping, isochrones, solvers' matrices) goes through
:class:`RoadNetwork` and its typed results; nobody else imports ``osrm``.

Concurrency: the engine is safe to share, but each call holds the GIL while it computes
(measured: two threads run no faster than one, and other Python threads stall meanwhile).
Route, nearest and short matches take about a millisecond: call them directly, even from
async code. A large table (60 x 60 is ~10 ms on Malta) blocks the event loop for that long whether it
runs inline or in ``asyncio.to_thread``; put heavy batch work in its own process, which opens
its own :class:`RoadNetwork` (the graph is memory-mapped, so processes share the pages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import osrm
from prometheus_client import Counter

from core.geo import LatLng

# OSRM error codes meaning "the road network has no answer", as opposed to a bad request.
_NO_ANSWER = ("NoRoute", "NoSegment", "NoMatch", "NoTable", "NoTrips")
# Every OSRM call by outcome: "error" (neither an answer nor "no road") is what operators
# alert on (docs/runbook.md, OSRM down). Children bound once: snapping calls this per fix.
CALLS = Counter("lastmile_roads_calls_total", "OSRM calls by outcome.", ["outcome"])
_OK, _NO_ROUTE, _ERROR = (CALLS.labels(o) for o in ("ok", "no_route", "error"))


class NoRoute(RuntimeError):
    """No road connects the points, or a point is farther than allowed from any road."""


@dataclass(frozen=True, slots=True)
class Snap:
    """A position moved onto the nearest road."""

    location: LatLng
    distance_m: float
    name: str


@dataclass(frozen=True, slots=True)
class Step:
    """One manoeuvre of turn-by-turn directions."""

    maneuver_type: str
    modifier: str | None
    name: str
    distance_m: float
    duration_s: float
    location: LatLng


@dataclass(frozen=True, slots=True)
class Leg:
    """The part of a route between two consecutive input points."""

    distance_m: float
    duration_s: float
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """The fastest drive through the points, in order."""

    distance_m: float
    duration_s: float
    geometry: tuple[LatLng, ...]
    legs: tuple[Leg, ...]
    waypoints: tuple[Snap, ...]


@dataclass(frozen=True, slots=True)
class Matrix:
    """Drive durations and distances from each source (row) to each destination (column).

    None where no road leads from that source to that destination.
    """

    durations_s: tuple[tuple[float | None, ...], ...]
    distances_m: tuple[tuple[float | None, ...], ...]


def _plain(value: Any) -> Any:
    """Turn the bindings' ``Object``/``Array`` tree into dicts and lists."""
    if isinstance(value, osrm.Object):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, osrm.Array):
        return [_plain(item) for item in value]
    return value


def _answer(value: Any) -> dict[str, Any]:
    """A whole answer as plain dicts and lists."""
    answer: dict[str, Any] = _plain(value)
    return answer


def _first_snap(answer: Any) -> Snap:
    """The first waypoint of a Nearest answer."""
    return _waypoint(answer["waypoints"][0])


def _waypoint(raw: Any) -> Snap:
    """A waypoint or tracepoint, from the bindings' object or its plain-dict form."""
    lng, lat = raw["location"]
    return Snap(LatLng(float(lat), float(lng)), float(raw["distance"]), str(raw["name"] or ""))


def _step(raw: dict[str, Any]) -> Step:
    maneuver = raw["maneuver"]
    return Step(
        maneuver_type=str(maneuver["type"]),
        modifier=maneuver.get("modifier"),
        name=str(raw.get("name") or ""),
        distance_m=float(raw["distance"]),
        duration_s=float(raw["duration"]),
        location=LatLng.from_lnglat(maneuver["location"]),
    )


def _leg(raw: Any) -> Leg:
    """A leg from the bindings' object (its steps, few and only when asked, as plain dicts)."""
    return Leg(
        distance_m=float(raw["distance"]),
        duration_s=float(raw["duration"]),
        steps=tuple(_step(_plain(step)) for step in raw["steps"]),
    )


def _first_route(answer: Any) -> Route:
    """The first route of a Route answer, read straight from the bindings' object: converting
    the whole tree first cost more than OSRM's own search (a 400-point line on Malta: 0.5 ms
    of conversion on top of 0.45 ms of routing)."""
    best = answer["routes"][0]
    return Route(
        distance_m=float(best["distance"]),
        duration_s=float(best["duration"]),
        geometry=tuple(LatLng.from_lnglat(c) for c in best["geometry"]["coordinates"]),
        legs=tuple(_leg(leg) for leg in best["legs"]),
        waypoints=tuple(_waypoint(w) for w in answer["waypoints"]),
    )


def _rows(raw: list[list[float | None]] | None) -> tuple[tuple[float | None, ...], ...]:
    if raw is None:
        return ()
    return tuple(tuple(None if cell is None else float(cell) for cell in row) for row in raw)


def graph_exists(path: Path | str) -> bool:
    """Whether a built graph (its contracted hierarchy file) is at the ``.osrm`` base ``path``."""
    return Path(path).with_suffix(".osrm.hsgr").exists()


class RoadNetwork:
    """A road graph opened from the ``.osrm`` base path that :func:`ops.graph.build_graph` made.

    ``max_snap_m`` bounds how far an input point may be from a road (route, table, nearest):
    without it OSRM snaps a point in the sea to a coast tens of kilometres away.
    """

    def __init__(self, path: Path | str, max_snap_m: float | None = 1000.0) -> None:
        """Open the graph (memory-mapped files, no shared-memory datastore)."""
        self.path = Path(path)
        self.max_snap_m = max_snap_m
        self._engine = osrm.OSRM(
            algorithm="CH", storage_config=str(self.path), use_shared_memory=False
        )

    def route(self, points: Sequence[LatLng], steps: bool = False) -> Route:
        """Fastest route through ``points`` (at least two) in order."""
        if len(points) < 2:
            raise ValueError("a route needs at least two points")
        params = osrm.RouteParameters(
            coordinates=[p.lnglat() for p in points],
            radiuses=self._radiuses(len(points)),
            steps=steps,
            geometries="geojson",
            overview="full",
        )
        return self._call(self._engine.Route, params, _first_route)

    def table(
        self,
        sources: Sequence[LatLng],
        destinations: Sequence[LatLng] | None = None,
        distances: bool = True,
    ) -> Matrix:
        """Durations (and distances, unless ``distances`` is False: OSRM then skips unpacking
        every path, several times faster) between every source and destination (sources if
        None). ``distances_m`` is empty when not asked for."""
        if not sources:
            raise ValueError("a table needs at least one source")
        coordinates = [p.lnglat() for p in sources]
        extra: dict[str, list[int]] = {}
        if destinations is not None:
            # One coordinate list; sources and destinations are index ranges into it.
            extra = {
                "sources": list(range(len(sources))),
                "destinations": list(range(len(sources), len(sources) + len(destinations))),
            }
            coordinates += [p.lnglat() for p in destinations]
        params = osrm.TableParameters(
            coordinates=coordinates,
            radiuses=self._radiuses(len(coordinates)),
            annotations=["duration", "distance"] if distances else ["duration"],
            generate_hints=False,
            **extra,
        )
        # Nobody reads the snapped waypoints of a table; converting them costs Python time.
        params.skip_waypoints = True
        result = self._call(self._engine.Table, params, _answer)
        return Matrix(
            durations_s=_rows(result.get("durations")),
            distances_m=_rows(result.get("distances")),
        )

    def nearest(self, point: LatLng) -> Snap:
        """The nearest point on a drivable road."""
        params = osrm.NearestParameters(
            coordinates=[point.lnglat()], radiuses=self._radiuses(1), generate_hints=False
        )
        # Called for every ingested fix: read the three fields straight from the bindings'
        # object (converting the whole answer cost a fifth of the call).
        return self._call(self._engine.Nearest, params, _first_snap)

    def snap(self, point: LatLng, max_distance_m: float) -> LatLng | None:
        """The nearest road position, or None when no road lies within ``max_distance_m`` (a
        car park, a wrong fix: better left where it is than pulled onto some far road)."""
        try:
            found = self.nearest(point)
        except (NoRoute, RuntimeError):
            return None
        return found.location if found.distance_m <= max_distance_m else None

    def match(
        self,
        points: Sequence[LatLng],
        timestamps: Sequence[int],
        accuracy_m: float | None = None,
    ) -> list[Snap | None]:
        """Map-match a GPS trace: one snapped position per input point, None for outliers.

        ``timestamps`` are increasing Unix seconds; ``accuracy_m`` is the GPS error's standard
        deviation (OSRM assumes 5 m when None).
        """
        if len(points) != len(timestamps):
            raise ValueError("one timestamp per point")
        if len(points) < 2:
            raise ValueError("a trace needs at least two points")
        params = osrm.MatchParameters(
            coordinates=[p.lnglat() for p in points],
            timestamps=[int(t) for t in timestamps],
            radiuses=[accuracy_m] * len(points) if accuracy_m is not None else [],
            gaps="split",
        )
        result = self._call(self._engine.Match, params, _answer)
        return [None if tp is None else _waypoint(tp) for tp in result["tracepoints"]]

    def _radiuses(self, count: int) -> list[float | None]:
        return [self.max_snap_m] * count if self.max_snap_m is not None else []

    def _call[T](self, service: Any, params: Any, convert: Callable[[Any], T]) -> T:
        try:
            result = convert(service(params))
        except RuntimeError as exc:
            # The bindings raise "<Code> - <message>"; only "no answer" codes are ours.
            if str(exc).split(" ", 1)[0] in _NO_ANSWER:
                _NO_ROUTE.inc()
                raise NoRoute(str(exc)) from exc
            _ERROR.inc()
            raise
        _OK.inc()
        return result
