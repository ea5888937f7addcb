"""The simulated city on the real road network: places on drivable roads and driving routes.

The simulator is a client of the road network the way a navigation app is: it opens its own
OSRM graph (built by ``ops.graph.build_graph`` from any ``.osm.pbf``) through
``core.roads.RoadNetwork``, the project's one OSRM adapter. It uses nothing of the services.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from core.geo import LatLng
from core.roads import NoRoute, RoadNetwork
from core.settings import Settings
from ops.graph import build_graph
from simulator.gps import RoutePath, offset

# Attempts at finding a drivable spot near a random point before giving up.
PLACE_ATTEMPTS = 50


def road_graph(settings: Settings, pbf: Path | None) -> Path:
    """The simulator's graph of ``pbf`` (the platform's city when None), built once and cached
    under the platform's graph folder, one sub-folder per extract. Build it before starting
    processes that open it: concurrent first builds would collide."""
    source = (pbf or settings.osm_pbf).resolve()
    graph_dir = settings.graph_dir / "simulator" / source.name.removesuffix(".osm.pbf")
    return build_graph(source, graph_dir)


def open_roads(settings: Settings, pbf: Path | None) -> RoadNetwork:
    """The road network of ``pbf`` (see :func:`road_graph`)."""
    return RoadNetwork(road_graph(settings, pbf))


class City:
    """Places and routes inside a circle around the scenario's centre."""

    def __init__(self, roads: RoadNetwork, center: LatLng, radius_m: float) -> None:
        self.roads = roads
        self.center = center
        self.radius_m = radius_m

    def random_place(self, rng: random.Random) -> LatLng:
        """A point on a drivable road, uniformly spread over the circle, reachable from the
        centre (islands and closed estates are skipped)."""
        for _ in range(PLACE_ATTEMPTS):
            r = self.radius_m * math.sqrt(rng.random())
            theta = rng.uniform(0.0, 2 * math.pi)
            guess = offset(self.center, r * math.cos(theta), r * math.sin(theta))
            try:
                spot = self.roads.nearest(guess).location
                self.roads.route([self.center, spot])
                self.roads.route([spot, self.center])
            except NoRoute:
                continue
            return spot
        raise RuntimeError(f"no drivable place within {self.radius_m} m of {self.center}")

    def snap(self, point: LatLng) -> LatLng:
        """The nearest drivable spot (replayed coordinates may lie off the road)."""
        return self.roads.nearest(point).location

    def path(self, start: LatLng, end: LatLng) -> RoutePath:
        """The driving path with per-step road speeds; a straight line when no road."""
        try:
            route = self.roads.route([start, end], steps=True)
        except NoRoute:
            return RoutePath([start, end])
        breaks: list[tuple[float, float]] = []
        at = 0.0
        for leg in route.legs:
            for step in leg.steps:
                if step.distance_m > 0 and step.duration_s > 0:
                    breaks.append((at, step.distance_m / step.duration_s))
                at += step.distance_m
        return RoutePath(list(route.geometry), breaks)
