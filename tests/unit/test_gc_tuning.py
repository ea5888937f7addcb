"""core.gc_tuning: start-up objects leave the collector's view, young collections get rarer,
and pauses are observed."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from core import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the interpreter's collector back as it was (other tests share this process)."""
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks


def _pauses(generation: int) -> float:
    value = REGISTRY.get_sample_value(
        "lastmile_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


def test_settle_freezes_start_up_objects_and_raises_the_young_threshold(restored: None) -> None:
    kept = [[index] for index in range(1000)]  # alive before settling: frozen
    _, older_before, oldest_before = gc.get_threshold()
    gc_tuning.settle(50_000)
    assert gc.get_freeze_count() >= len(kept)
    assert REGISTRY.get_sample_value("lastmile_gc_frozen_objects") == gc.get_freeze_count()
    young, older, oldest = gc.get_threshold()
    assert young == 50_000
    assert (older, oldest) == (older_before, oldest_before)


def test_zero_keeps_the_default_threshold(restored: None) -> None:
    before = gc.get_threshold()
    gc_tuning.settle(0)
    assert gc.get_threshold() == before


def test_cycles_made_after_settling_are_still_collected_and_pauses_observed(
    restored: None,
) -> None:
    gc_tuning.settle(50_000)
    before = _pauses(2)

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2
    assert _pauses(2) == before + 1
    # Settling again (one full collection of its own) does not observe each pause twice.
    gc_tuning.settle(50_000)
    assert _pauses(2) == before + 2
    gc.collect()
    assert _pauses(2) == before + 3
