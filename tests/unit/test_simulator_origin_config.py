"""Simulated origins' scenario settings: whether they answer through OriginService, and the
preparation-time distribution they draw from."""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from simulator.clock import SimClock
from simulator.metrics import Recorder
from simulator.origin import SimOrigin
from simulator.scenario import Origins, ScenarioError, load, parse

from core.geo import LatLng

REPO = Path(__file__).resolve().parents[2]


def test_origins_answer_through_the_api_by_default_and_in_the_demo() -> None:
    assert parse("").origins.api is True
    assert load(REPO / "scenarios" / "demo.toml").origins.api is True
    quiet = parse('[origins]\napi = false\nprep_distribution = "triangular"\nprep_mode_s = 400')
    assert quiet.origins.api is False
    assert (quiet.origins.prep_distribution, quiet.origins.prep_mode_s) == ("triangular", 400.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[origins]\nprep_distribution = "normal"', "one of uniform, triangular"),
        ("[origins]\nprep_mode_s = 100.0", "prep_mode_s must lie between"),
        ("[origins]\nprep_min_s = -1.0", "prep_min_s must not be negative"),
        ('[origins]\napi = "yes"', "origins.api: expected bool"),
    ],
)
def test_bad_origin_settings_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(text)


def draws(config: Origins, count: int = 4000) -> list[float]:
    connection: Any = None  # no platform call is made by drawing
    origin = SimOrigin(
        "o", LatLng(35.9, 14.5), config, connection, SimClock(10.0), Recorder(), random.Random(5)
    )
    return [origin.draw_preparation() for _ in range(count)]


def test_preparations_follow_the_configured_distribution() -> None:
    uniform = draws(Origins(prep_min_s=300.0, prep_max_s=900.0))
    assert min(uniform) >= 300.0 and max(uniform) <= 900.0
    assert statistics.mean(uniform) == pytest.approx(600.0, abs=15.0)
    peaked = draws(
        Origins(
            prep_min_s=300.0, prep_max_s=1200.0, prep_distribution="triangular", prep_mode_s=400.0
        )
    )
    assert min(peaked) >= 300.0 and max(peaked) <= 1200.0
    # Triangular mean: (min + max + mode) / 3; most orders are quicker than the middle.
    assert statistics.mean(peaked) == pytest.approx(633.3, abs=15.0)
    assert statistics.median(peaked) < 750.0
