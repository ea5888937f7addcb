"""Road snapping: raw GPS fixes moved onto the road so customers see no off-road jitter.

Modes (``Settings.snap_mode``):

* ``nearest``: the latest fix of each driver in a round to its nearest road (~50 us); the
  default. Only that fix is shown (live state, customers, dispatchers); the others are stored
  raw and snapped when a path is read with ``snapped`` (tracking.fleet_state), so ingest pays
  one snap per driver and round instead of one per fix (a 5-fix batch: a fifth).
* ``match``: one OSRM map-matching call per driver per batch: uses the trace's continuity, so
  a fix between two parallel roads lands on the one the driver is really on; costs about a
  millisecond per batch, more for long traces. Falls back to ``nearest`` when OSRM finds no
  match.
* ``off``: no snapping.

Jitter filter: a fix farther than ``snap_max_distance_m`` from any road (a car park, a wrong
fix) is left unsnapped instead of being pulled onto some far road.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.geo import LatLng, haversine_m
from core.roads import NoRoute, RoadNetwork, Snap
from tracking.positions import Fix

log = logging.getLogger(__name__)
MODES = ("nearest", "match", "off")


class Snapper:
    """Snaps the fixes of one driver (oldest first)."""

    def __init__(self, roads: RoadNetwork | None, mode: str, max_distance_m: float) -> None:
        if mode not in MODES:
            raise ValueError(f"snap mode must be one of {MODES}, got {mode!r}")
        self._roads = roads
        self._mode = mode if roads is not None else "off"
        self._max = max_distance_m

    def snap(self, fixes: Sequence[Fix]) -> list[LatLng | None]:
        """One snapped position (or None) per fix, same order: every fix in ``match`` mode,
        the last one in ``nearest`` mode (see the module docstring)."""
        if self._mode == "off" or not fixes:
            return [None] * len(fixes)
        if self._mode == "match" and len(fixes) >= 2:
            matched = self._match(fixes)
            if matched is not None:
                return matched
        return [None] * (len(fixes) - 1) + [self._nearest(fixes[-1].position)]

    def _accept(self, raw: LatLng, snap: Snap | None) -> LatLng | None:
        if snap is None:
            return None
        # OSRM's distance is to the input point; recompute for match, which may move points.
        if haversine_m(raw, snap.location) > self._max:
            return None
        return snap.location

    def _nearest(self, raw: LatLng) -> LatLng | None:
        assert self._roads is not None
        return self._roads.snap(raw, self._max)

    def _match(self, fixes: Sequence[Fix]) -> list[LatLng | None] | None:
        assert self._roads is not None
        stamps: list[int] = []
        for fix in fixes:
            # OSRM wants increasing whole seconds; fixes closer than a second share one.
            stamps.append(max(int(fix.at.timestamp()), stamps[-1] if stamps else 0))
        try:
            snaps = self._roads.match([f.position for f in fixes], stamps)
        except (NoRoute, RuntimeError, ValueError) as exc:
            log.debug("match failed, using nearest", extra={"error": str(exc)})
            return None
        return [
            self._accept(fix.position, snap) if snap is not None else self._nearest(fix.position)
            for fix, snap in zip(fixes, snaps, strict=True)
        ]
