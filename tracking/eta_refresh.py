"""When a driver's ETAs are recomputed: never per ping, only when it matters.

A driver is due when it has no mark here (new to this process), its orders or their statuses
changed since the last computation, it moved ``eta_refresh_distance_m`` since then, or that is
``eta_refresh_interval_s`` old. At most ``eta_max_routes_per_batch`` are due per batch, the
stalest first (OSRM holds the GIL; the others wait for a later batch).

Marks live in the process, not in Redis: a driver's batches go to one process at a time
(shard leases), and a driver new to a process merely gets its ETAs at its first position
there. Pure: no I/O, the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.geo import LatLng, haversine_m
from core.settings import Settings
from tracking.positions import PositionUpdate


@dataclass(frozen=True, slots=True)
class _Mark:
    """Where and when a driver's ETAs were last computed, and for which orders."""

    position: LatLng
    at_s: float
    orders: str


class RefreshPolicy:
    """The marks of one process's drivers and the rule above."""

    def __init__(self, settings: Settings) -> None:
        self._distance_m = settings.eta_refresh_distance_m
        self._interval_s = settings.eta_refresh_interval_s
        self._per_batch = settings.eta_max_routes_per_batch
        # Oldest first. A mark older than the interval decides nothing (the driver is due
        # anyway), so it is dropped: the dict holds only recently routed drivers.
        self._marks: dict[str, _Mark] = {}

    def due(
        self, updates: Sequence[PositionUpdate], orders: Mapping[str, str], now_s: float
    ) -> list[PositionUpdate]:
        """The updates whose drivers to route now, stalest first, at most the batch bound;
        ``orders`` names each driver's orders and their statuses (any stable text)."""
        candidates: list[tuple[float, PositionUpdate]] = []
        for update in updates:
            mark = self._marks.get(update.driver_id)
            if mark is None or mark.orders != orders[update.driver_id]:
                candidates.append((0.0, update))
            elif (
                now_s - mark.at_s >= self._interval_s
                or haversine_m(mark.position, update.shown) >= self._distance_m
            ):
                candidates.append((mark.at_s, update))
        candidates.sort(key=lambda c: c[0])
        return [u for _, u in candidates[: self._per_batch]]

    def computed(
        self, updates: Sequence[PositionUpdate], orders: Mapping[str, str], now_s: float
    ) -> None:
        """Mark these drivers' ETAs as computed from these positions at ``now_s``."""
        for update in updates:
            self._marks.pop(update.driver_id, None)  # re-inserted last: the newest
            self._marks[update.driver_id] = _Mark(update.shown, now_s, orders[update.driver_id])
        horizon = now_s - self._interval_s
        while self._marks:
            driver_id, oldest = next(iter(self._marks.items()))
            if oldest.at_s > horizon:
                break
            del self._marks[driver_id]

    def __len__(self) -> int:
        """Drivers marked (routed within the interval)."""
        return len(self._marks)
