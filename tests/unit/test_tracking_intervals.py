"""Tenants' tracking intervals: defaults, overrides, the checks and the config an app is told."""

from __future__ import annotations

import datetime as dt

import pytest
from lastmile.driver.v1 import driver_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.errors import InvalidArgument
from core.settings import Settings
from core.tracking_intervals import (
    Intervals,
    Overrides,
    check,
    effective,
    overrides_from_proto,
    to_proto,
    tracking_config,
)

SETTINGS = Settings.from_env({})


def test_unset_overrides_take_the_defaults() -> None:
    mixed = effective(Overrides(active_upload_s=8.0), SETTINGS)
    assert mixed.active_upload_s == 8.0
    assert mixed.active_capture_s == SETTINGS.active_capture_interval_s
    assert mixed.passive_upload_s == SETTINGS.passive_upload_interval_s
    assert effective(None, SETTINGS) == effective(Overrides(), SETTINGS)


def test_only_the_fields_a_request_sets_are_overrides() -> None:
    message = tracking_pb2.TrackingIntervals()
    message.passive_upload_interval.FromTimedelta(dt.timedelta(seconds=90, milliseconds=500))
    assert overrides_from_proto(message) == Overrides(passive_upload_s=90.5)


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        (Intervals(0.9, 5, 30, 120), "active_capture_interval must be between 1 s and 3600 s"),
        (Intervals(1, 0.5, 30, 120), "active_upload_interval must be between the capture"),
        (Intervals(1, 5, 30, 3600.5), "passive_upload_interval must be between"),
        (Intervals(1, 101, 30, 120), "is 101 fixes a batch; the gateway takes at most 100"),
    ],
)
def test_intervals_an_app_cannot_follow_are_refused(intervals: Intervals, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check(intervals, SETTINGS.replace(ingest_max_batch_size=100))


def test_the_edges_are_allowed() -> None:
    check(Intervals(1, 100, 3600, 3600), SETTINGS.replace(ingest_max_batch_size=100))


def test_an_app_is_told_the_pair_of_its_mode_and_the_gateway_limits() -> None:
    intervals = Intervals(2, 10, 60, 300)
    active = tracking_config(intervals, driver_pb2.TRACKING_MODE_ACTIVE, SETTINGS)
    assert (active.capture_interval.ToSeconds(), active.upload_interval.ToSeconds()) == (2, 10)
    assert active.max_batch_size == SETTINGS.ingest_max_batch_size
    # An unknown mode is idle.
    idle = tracking_config(intervals, driver_pb2.TRACKING_MODE_UNSPECIFIED, SETTINGS)
    assert idle.mode == driver_pb2.TRACKING_MODE_PASSIVE
    assert idle.upload_interval.ToSeconds() == 300


def test_the_view_sets_every_interval_and_the_time_only_once_changed() -> None:
    view = to_proto(Intervals(1.5, 5, 30, 120), None)
    assert view.active_capture_interval.ToMilliseconds() == 1500
    assert not view.HasField("update_time")
    at = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert to_proto(Intervals(1, 5, 30, 120), at).update_time.ToDatetime(dt.UTC) == at
