"""Origin rules (pure): where a rejected order goes, preparation times, fallback lists, and the
pickup window planning derives from an origin's ready time."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.duration_pb2 import Duration

from core.errors import InvalidArgument
from dispatch.origin_orders import pickup_bounds
from dispatch.origin_rules import (
    MAX_FALLBACKS,
    check_fallbacks,
    check_reason,
    preparation_s,
    reroute,
)

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_reroute_takes_the_first_open_fallback_that_did_not_reject() -> None:
    outcome = reroute(
        "a",
        ["gone", "b", "c", "d"],
        {"b": False, "c": True, "d": False},
        rejected_by=["b"],
    )
    assert outcome.origin_id == "d"
    assert outcome.explanation == (
        "origin a rejected; fallback gone unknown; fallback b rejected it already;"
        " fallback c closed; rerouted to fallback d"
    )


def test_reroute_ends_the_order_when_no_fallback_is_left() -> None:
    assert reroute("a", [], {}, []).origin_id == ""
    ended = reroute("a", ["b", "a"], {"a": False, "b": True}, ["a"])
    assert ended.origin_id == ""
    assert ended.explanation.endswith("no fallback left: cancelled (origin_rejected)")
    # A chain back to an origin that rejected already stops there.
    assert reroute("b", ["a"], {"a": False}, ["a", "b"]).origin_id == ""


@pytest.mark.parametrize(
    ("duration", "expected"),
    [(Duration(seconds=0), 0), (Duration(seconds=600), 600), (Duration(seconds=9, nanos=1), 10)],
)
def test_preparation_in_whole_seconds(duration: Duration, expected: int) -> None:
    assert preparation_s(duration, 3600.0) == expected


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        (Duration(seconds=-1), "must not be negative"),
        (Duration(seconds=0, nanos=-5), "must not be negative"),
        (Duration(seconds=3601), "at most 3600 s"),
        (Duration(seconds=10**11), "at most 3600 s"),
        (Duration(seconds=5, nanos=-3), "not a valid Duration"),
        (Duration(seconds=5, nanos=2_000_000_000), "not a valid Duration"),
    ],
)
def test_bad_preparations_are_invalid_arguments(duration: Duration, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        preparation_s(duration, 3600.0)


def test_reasons_and_fallback_lists_are_checked() -> None:
    assert check_reason("  out of basil ") == "out of basil"
    for bad in ("", "   ", "x" * 501):
        with pytest.raises(InvalidArgument):
            check_reason(bad)
    assert check_fallbacks("a", ["b", "c"]) == ["b", "c"]
    for fallbacks, message in (
        (["a"], "its own fallback"),
        (["b", "b"], "twice"),
        ([""], "empty"),
        ([f"o{i}" for i in range(MAX_FALLBACKS + 1)], "at most"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            check_fallbacks("a", fallbacks)


def test_pickup_window_opens_when_the_origin_expects_the_order_ready() -> None:
    hour = dt.timedelta(hours=1)
    row = {"pickup_start": T0, "pickup_end": T0 + hour, "ready_at": T0 + hour / 4}
    assert pickup_bounds(row) == (T0 + hour / 4, T0 + hour)
    # Ready before the window opens: the window stands.
    assert pickup_bounds({**row, "ready_at": T0 - hour}) == (T0, T0 + hour)
    # No window at all, no origin time: open.
    assert pickup_bounds({"pickup_start": None, "pickup_end": None}) == (None, None)
    assert pickup_bounds({"pickup_start": None, "pickup_end": None, "ready_at": T0}) == (T0, None)
    # Ready after the window closed: it is picked up when ready, late rather than never.
    late = T0 + 2 * hour
    assert pickup_bounds({**row, "ready_at": late}) == (late, late)
