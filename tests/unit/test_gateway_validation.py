"""The gateway's event checks: each bad input gets its code and a message naming the field."""

from __future__ import annotations

import math

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.settings import Settings
from gateway import validation
from tests.helpers import undefined_enum

SETTINGS = Settings.from_env({})
IDLE = common_pb2.DRIVER_STATUS_IDLE
ARRIVED = driver_pb2.STOP_EVENT_KIND_ARRIVED
NOT_HOME = common_pb2.FAILURE_REASON_NOT_HOME
NOW = 1_800_000_000.0


def _fix(
    lat: float = 35.9, lng: float = 14.5, at: float = NOW - 1, **extra: float
) -> common_pb2.GpsFix:
    fix = common_pb2.GpsFix(accuracy_m=5, speed_mps=10, heading_deg=90)
    for key, value in extra.items():
        setattr(fix, key, value)
    fix.position.lat, fix.position.lng = lat, lng
    fix.captured_at.FromMicroseconds(int(at * 1e6))
    return fix


def _batch(*fixes: common_pb2.GpsFix) -> driver_pb2.LocationBatch:
    return driver_pb2.LocationBatch(fixes=list(fixes))


def test_a_good_batch_passes() -> None:
    assert validation.check_batch(_batch(_fix(at=NOW - 2), _fix(at=NOW - 1)), SETTINGS, NOW) is None


def test_unknown_speed_and_heading_are_allowed() -> None:
    assert validation.check_batch(_batch(_fix(speed_mps=-1, heading_deg=-1)), SETTINGS, NOW) is None


@pytest.mark.parametrize(
    ("fix", "field"),
    [
        (_fix(lat=math.nan), "fixes[0].position.lat"),
        (_fix(lat=91), "fixes[0].position.lat"),
        (_fix(lng=-180.5), "fixes[0].position.lng"),
        (_fix(lng=math.inf), "fixes[0].position.lng"),
        (_fix(accuracy_m=-1), "fixes[0].accuracy_m"),
        (_fix(accuracy_m=1e7), "fixes[0].accuracy_m"),
        (_fix(speed_mps=101), "fixes[0].speed_mps"),
        (_fix(speed_mps=math.nan), "fixes[0].speed_mps"),
        (_fix(heading_deg=400), "fixes[0].heading_deg"),
        (_fix(at=NOW + 31), "fixes[0].captured_at"),
        (_fix(at=NOW - 86401), "fixes[0].captured_at"),
    ],
)
def test_bad_fixes_are_refused_naming_the_field(fix: common_pb2.GpsFix, field: str) -> None:
    refusal = validation.check_batch(_batch(fix), SETTINGS, NOW)
    assert refusal is not None
    assert refusal.code == validation.INVALID_ARGUMENT
    assert field in refusal.message


def test_the_index_of_the_bad_fix_is_named() -> None:
    refusal = validation.check_batch(_batch(_fix(), _fix(), _fix(lat=math.nan)), SETTINGS, NOW)
    assert refusal is not None and "fixes[2]" in refusal.message


def test_missing_position_and_time_are_refused() -> None:
    no_position = _fix()
    no_position.ClearField("position")
    no_time = _fix()
    no_time.ClearField("captured_at")
    assert "position is missing" in str(validation.check_batch(_batch(no_position), SETTINGS, NOW))
    assert "captured_at is missing" in str(validation.check_batch(_batch(no_time), SETTINGS, NOW))


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, 2**31 - 1])
def test_a_capture_time_with_nanos_out_of_range_is_refused(nanos: int) -> None:
    # It is within the allowed age by its seconds, but the processor cannot convert it after
    # the ack: it must be refused before, not lost after.
    fix = _fix()
    fix.captured_at.nanos = nanos
    refusal = validation.check_batch(_batch(fix), SETTINGS, NOW)
    assert refusal is not None and "fixes[0].captured_at.nanos" in refusal.message


def test_batch_size_limits() -> None:
    empty = validation.check_batch(_batch(), SETTINGS, NOW)
    assert empty is not None and "empty" in empty.message
    big = validation.check_batch(_batch(*[_fix()] * 101), SETTINGS, NOW)
    assert big is not None and "at most 100" in big.message
    assert validation.check_batch(_batch(*[_fix()] * 100), SETTINGS, NOW) is None


def test_fixes_must_be_in_time_order() -> None:
    refusal = validation.check_batch(_batch(_fix(at=NOW - 1), _fix(at=NOW - 5)), SETTINGS, NOW)
    assert refusal is not None and "fixes[1].captured_at" in refusal.message


def test_sequence_rules() -> None:
    assert validation.check_seq(1, 0) is None
    assert validation.check_seq(10, 3) is None  # gaps are allowed
    zero = validation.check_seq(0, 0)
    assert zero is not None and zero.code == validation.FAILED_PRECONDITION
    backwards = validation.check_seq(3, 7)
    assert backwards is not None and backwards.code == validation.FAILED_PRECONDITION
    assert "backwards" in backwards.message
    repeat = validation.check_seq(7, 7)
    assert repeat is not None
    assert validation.check_seq(2**53, 0) is not None


Req = driver_service_pb2.ConnectRequest


@pytest.mark.parametrize(
    ("request_", "text"),
    [
        (Req(seq=1), "event is empty"),
        (Req(seq=1, hello=driver_pb2.Hello()), "Hello"),
        (Req(seq=1, status=driver_pb2.StatusChange()), "status.status"),
        (
            Req(seq=1, stop=driver_pb2.StopEvent(kind=driver_pb2.STOP_EVENT_KIND_ARRIVED)),
            "stop.order_id",
        ),
        (Req(seq=1, stop=driver_pb2.StopEvent(order_id="o")), "stop.kind"),
        (Req(seq=1, offer_answer=driver_pb2.OfferAnswer()), "offer_answer.offer_id"),
        # Numbers the contract does not define: protobuf keeps them, the gateway refuses them.
        (
            Req(seq=1, status=driver_pb2.StatusChange(status=undefined_enum(99))),
            "status.status: 99 is not a",
        ),
        (
            Req(seq=1, stop=driver_pb2.StopEvent(order_id="o", kind=undefined_enum(4))),
            "stop.kind: 4 is not a StopEventKind",
        ),
        (
            Req(
                seq=1,
                failed_attempt=driver_pb2.FailedAttempt(order_id="o", reason=undefined_enum(-1)),
            ),
            "failed_attempt.reason: -1 is not a FailureReason",
        ),
        (
            Req(seq=1, failed_attempt=driver_pb2.FailedAttempt(order_id="o")),
            "failed_attempt.reason",
        ),
        (Req(seq=1, route_ack=driver_pb2.RouteAck()), "route_ack.route_id"),
        (
            Req(seq=1, route_ack=driver_pb2.RouteAck(route_id="r", version=2**31)),
            "route_ack.version is above",
        ),
        (
            Req(
                seq=1,
                stop=driver_pb2.StopEvent(
                    order_id="o\x00", kind=driver_pb2.STOP_EVENT_KIND_ARRIVED
                ),
            ),
            "stop.order_id must not contain NUL",
        ),
        (
            Req(
                seq=1,
                failed_attempt=driver_pb2.FailedAttempt(
                    order_id="o", note="\x00", reason=common_pb2.FAILURE_REASON_NOT_HOME
                ),
            ),
            "failed_attempt.note must not contain NUL",
        ),
        (
            Req(
                seq=1,
                failed_attempt=driver_pb2.FailedAttempt(
                    order_id="o", note="n" * 5000, reason=common_pb2.FAILURE_REASON_NOT_HOME
                ),
            ),
            "failed_attempt.note is longer than 2048 characters (5000)",
        ),
        (
            Req(seq=1, offer_answer=driver_pb2.OfferAnswer(offer_id="x" * 129, accepted=True)),
            "offer_answer.offer_id is longer than 128 characters (129)",
        ),
    ],
)
def test_other_events_are_checked(request_: driver_service_pb2.ConnectRequest, text: str) -> None:
    refusal = validation.check_event(request_, SETTINGS, NOW)
    assert refusal is not None and text in refusal.message


def _at(seconds_from_now: float, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=int(NOW + seconds_from_now), nanos=nanos)


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (_at(31), "s in the future (at most 30 s allowed)"),
        (_at(-86_401), "s old (at most 86400 s allowed)"),
        (_at(-5, nanos=-1), "nanos must be within"),
        (Timestamp(seconds=2**62), "outside the years 1 to 9999"),
    ],
)
def test_the_time_of_status_stop_and_failed_attempt_events_is_checked(
    at: Timestamp, text: str
) -> None:
    # Stop events and failed attempts keep it in the order's history (when the driver acted,
    # not when the event arrived): a clock far off would write a wrong one. Every time an
    # app sends follows the same rule.
    events = {
        "status": Req(seq=1, status=driver_pb2.StatusChange(status=IDLE, at=at)),
        "stop": Req(seq=1, stop=driver_pb2.StopEvent(order_id="o", kind=ARRIVED, at=at)),
        "failed_attempt": Req(
            seq=1, failed_attempt=driver_pb2.FailedAttempt(order_id="o", reason=NOT_HOME, at=at)
        ),
    }
    for kind, event in events.items():
        refusal = validation.check_event(event, SETTINGS, NOW)
        assert refusal is not None and refusal.code == validation.INVALID_ARGUMENT, kind
        assert refusal.message.startswith(f"{kind}.at") and text in refusal.message, refusal
        event_at = getattr(event, kind).at
        event_at.CopyFrom(_at(-60))
        assert validation.check_event(event, SETTINGS, NOW) is None, kind


def test_good_other_events_pass() -> None:
    status = Req(seq=1, status=driver_pb2.StatusChange(status=common_pb2.DRIVER_STATUS_IDLE))
    answer = Req(seq=2, offer_answer=driver_pb2.OfferAnswer(offer_id="x", accepted=True))
    assert validation.check_event(status, SETTINGS, NOW) is None
    assert validation.check_event(answer, SETTINGS, NOW) is None
