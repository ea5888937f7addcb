"""The band edges of the ETA accuracy report (``eta_accuracy_horizons_s``): a malformed
setting stops the tracking process at start-up with a message naming it."""

from __future__ import annotations

import pytest

from tracking.eta_accuracy import parse_horizons


def test_edges_are_read_as_seconds() -> None:
    assert parse_horizons("300, 900,1800 ") == (300.0, 900.0, 1800.0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "positive"),
        ("300,ten", "not a list of seconds"),
        ("0,300", "positive"),
        ("300,nan", "positive"),
        ("900,300", "increase"),
        ("300,300", "increase"),
    ],
)
def test_malformed_edges_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="eta_accuracy_horizons_s") as refused:
        parse_horizons(text)

    assert reason in str(refused.value)
