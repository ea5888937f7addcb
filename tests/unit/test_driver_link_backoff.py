"""The simulator driver app's reconnect backoff: exponential, capped, jittered."""

from __future__ import annotations

import random

from simulator.driver_link import RECONNECT_BASE_S, RECONNECT_CAP_S, reconnect_delay


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**attempt)
        for _ in range(50):
            assert ceiling / 2 <= reconnect_delay(attempt, rng) <= ceiling
    assert reconnect_delay(10_000, rng) <= RECONNECT_CAP_S


def test_apps_cut_off_together_do_not_come_back_together() -> None:
    rng = random.Random(2)
    delays = [reconnect_delay(3, rng) for _ in range(1000)]
    # Spread over the upper half of the ceiling rather than one instant.
    assert max(delays) - min(delays) > RECONNECT_BASE_S * 2**3 * 0.4
