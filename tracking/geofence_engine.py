"""The geofence state machine of one (driver, fence) pair: pure, no I/O.

A driver is *outside* until a fix lies inside the fence by more than the enter margin, and
*inside* until a fix lies outside by more than the (larger) exit margin: fixes in the band
between change nothing, so GPS noise along the edge does not make the state flap. Margins
grow with the fix's accuracy radius: a fix that may be 30 m off proves nothing within 30 m of
the edge. DWELL fires once per stay, on the first fix at least ``min_dwell`` after entering
(no timers: a driver standing still keeps sending fixes, at the passive interval at worst).

Events are what dispatch turns into order status (see :mod:`tracking.geofence_observer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lastmile.tracking.v1 import tracking_pb2

ENTER = tracking_pb2.GEOFENCE_EVENT_KIND_ENTER
EXIT = tracking_pb2.GEOFENCE_EVENT_KIND_EXIT
DWELL = tracking_pb2.GEOFENCE_EVENT_KIND_DWELL


@dataclass(frozen=True, slots=True)
class Margins:
    """How far past the boundary a fix must be to enter (inside) or exit (outside)."""

    enter_m: float
    exit_m: float


@dataclass(frozen=True, slots=True)
class Inside:
    """The driver is inside the fence since ``since_ms``; ``dwelled`` once DWELL was sent."""

    since_ms: int
    dwelled: bool = False

    def encode(self) -> str:
        """Compact text for the driver's state hash."""
        return f"{self.since_ms}:{int(self.dwelled)}"

    @classmethod
    def decode(cls, raw: str) -> Inside | None:
        """Parse :meth:`encode` output; None for anything unreadable (treated as outside)."""
        since, _, dwelled = raw.partition(":")
        try:
            return cls(int(since), dwelled == "1")
        except ValueError:
            return None


def margins(
    accuracy_m: float, enter_m: float, exit_m: float, depth_m: float | None = None
) -> Margins:
    """Margins for one fix: at least the fix's accuracy radius.

    ``depth_m`` is the deepest a point can be inside the fence (a circle's radius): the
    enter margin never exceeds half of it, or a small fence could never be entered.
    """
    accuracy = max(accuracy_m, 0.0)
    enter = max(enter_m, accuracy)
    if depth_m is not None:
        enter = min(enter, depth_m / 2)
    return Margins(enter, max(exit_m, accuracy, enter))


def step(
    state: Inside | None,
    signed_distance_m: float,
    at_ms: int,
    bounds: Margins,
    min_dwell_ms: int,
) -> tuple[Inside | None, list[int]]:
    """The new state (None = outside) and the events one fix causes.

    ``signed_distance_m`` is the fix's distance from the boundary, negative inside.
    """
    if state is None:
        if signed_distance_m < -bounds.enter_m:
            return Inside(at_ms), [ENTER]
        return None, []
    if signed_distance_m > bounds.exit_m:
        return None, [EXIT]
    if min_dwell_ms > 0 and not state.dwelled and at_ms - state.since_ms >= min_dwell_ms:
        return Inside(state.since_ms, dwelled=True), [DWELL]
    return state, []
