"""Garbage-collector settings for long-running processes that answer within milliseconds.

With Python's defaults a serving process under load stopped for 150-230 ms every few seconds
(measured at 2,000 fixes/s: gateway and tracking processes, full collections): each full
collection walks every tracked object, and most of them were made at start-up (modules,
protobuf descriptors, the road graph's wrappers) and live as long as the process. Those pauses
were the tail of ping-to-customer latency.

:func:`settle` runs once a process is ready to serve: one full collection, then
``gc.freeze()`` moves the survivors out of the collector's view for good, and a larger
young-generation threshold makes collections rarer (each young collection stays a few
milliseconds). Cycles made while serving are still collected. Pauses are observed in
``lastmile_gc_pause_seconds{generation}``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Gauge, Histogram

PAUSE = Histogram(
    "lastmile_gc_pause_seconds",
    "Garbage-collection pauses, by generation.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
FROZEN = Gauge("lastmile_gc_frozen_objects", "Objects moved out of the collector's view at start.")
_PAUSES = [PAUSE.labels(str(generation)) for generation in range(3)]
_started: list[float] = []


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        _PAUSES[info["generation"]].observe(time.perf_counter() - _started[0])


def settle(young_threshold: int) -> None:
    """Freeze what start-up made, raise the young threshold (0: leave it), observe pauses."""
    gc.collect()
    gc.freeze()
    FROZEN.set(gc.get_freeze_count())
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


def release() -> None:
    """Give the frozen objects back to the collector, before the process exits: extension
    modules (the OSRM bindings) report objects still alive at exit as leaks."""
    gc.unfreeze()
