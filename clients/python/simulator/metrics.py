"""What a run observes: per-order outcomes, per-driver work, counters and time series."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

#: Outcomes an order can end a run with (platform status names, lower case).
FINAL_OUTCOMES = ("delivered", "failed", "returned", "cancelled", "rescheduled")


@dataclass
class OrderRecord:
    """One order as the simulation saw it; times are simulated seconds from the start."""

    order_id: str
    origin_id: str
    created_s: float
    window_end_s: float
    tracking_token: str = ""
    driver_id: str = ""
    outcome: str = "unfinished"
    delivered_s: float | None = None
    failures: list[str] = field(default_factory=list)
    # (when the customer saw it, the arrival it predicted), both simulated seconds.
    eta_samples: list[tuple[float, float]] = field(default_factory=list)
    arrived_s: float | None = None


@dataclass
class DriverRecord:
    """One driver's work: road distance and time with an order."""

    driver_id: str
    distance_m: float = 0.0
    busy_s: float = 0.0
    # Part of the distance driven taking returned parcels back to their origin.
    return_m: float = 0.0


@dataclass
class Recorder:
    """Shared by every actor of one run (single event loop: no locking needed)."""

    orders: dict[str, OrderRecord] = field(default_factory=dict)
    drivers: dict[str, DriverRecord] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    # Steps of the run and whether they happened ("done") or why not.
    steps: dict[str, str] = field(default_factory=dict)
    wall_start: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        """Remember something the report must say (once)."""
        if text not in self.notes:
            self.notes.append(text)

    def driver(self, driver_id: str) -> DriverRecord:
        """The driver's record, created on first use."""
        return self.drivers.setdefault(driver_id, DriverRecord(driver_id))

    def pings_per_s(self) -> float:
        """Fixes acknowledged per wall second since the start."""
        elapsed = time.monotonic() - self.wall_start
        return self.counts["fixes_acked"] / elapsed if elapsed > 0 else 0.0

    def done_orders(self) -> int:
        """Orders that reached a final outcome."""
        return sum(1 for o in self.orders.values() if o.outcome in FINAL_OUTCOMES)
