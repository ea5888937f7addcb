"""The daily order-rate curve (a base rate plus lunch and dinner peaks) and the arrival times
it produces (a non-homogeneous Poisson process, drawn by thinning from a seeded generator)."""

from __future__ import annotations

import math
import random

from simulator.scenario import Orders

LUNCH_PEAK_S = 12.5 * 3600.0
DINNER_PEAK_S = 19.5 * 3600.0
DAY_S = 86400.0


def rate_per_hour(orders: Orders, time_of_day_s: float) -> float:
    """Orders per simulated hour at a time of day (seconds since midnight, any day)."""
    t = time_of_day_s % DAY_S

    def peak(centre: float) -> float:
        return math.exp(-0.5 * ((t - centre) / orders.peak_width_s) ** 2)

    return (
        orders.base_per_hour
        + orders.lunch_peak_per_hour * peak(LUNCH_PEAK_S)
        + orders.dinner_peak_per_hour * peak(DINNER_PEAK_S)
    )


def arrivals(orders: Orders, start_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Offsets (simulated seconds from the start) at which orders are placed, capped by
    ``orders.max_orders`` when set."""
    ceiling = orders.base_per_hour + orders.lunch_peak_per_hour + orders.dinner_peak_per_hour
    if ceiling <= 0:
        return []
    per_s = ceiling / 3600.0
    found: list[float] = []
    offset = 0.0
    while True:
        offset += rng.expovariate(per_s)
        if offset >= duration_s:
            return found
        # Thinning: keep a candidate with probability rate(t) / ceiling.
        if rng.random() * ceiling <= rate_per_hour(orders, start_s + offset):
            found.append(offset)
            if orders.max_orders and len(found) >= orders.max_orders:
                return found
