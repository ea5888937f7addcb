"""Checks on each event a driver app sends, before it is enqueued.

Each check returns a :class:`Refusal` (a google.rpc code and a message naming the field and,
for fixes, the fix index) or None. A refused event becomes a ``Reject`` on the stream; the
stream stays open and earlier events stay accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2

from core.inputs import enum_problem, position_problem, text_problem, timestamp_problem
from core.settings import Settings

# google.rpc.Code values used in Reject.code.
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9
# Sequence numbers are compared in a Redis Lua script, whose numbers are doubles.
MAX_SEQ = 2**53
# The largest route version there can be (routes.version is a PostgreSQL integer).
MAX_ROUTE_VERSION = 2**31 - 1
# Events that carry the time the driver acted (``at``, optional): checked like capture times.
_TIMED = ("status", "stop", "failed_attempt")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event is refused: a google.rpc code and a message for the app's developers."""

    code: int
    message: str


def _invalid(message: str) -> Refusal:
    return Refusal(INVALID_ARGUMENT, message)


def check_fix(
    fix: common_pb2.GpsFix, index: int, settings: Settings, now_s: float
) -> Refusal | None:
    """One fix: position in range, plausible accuracy and speed, a believable capture time."""
    where = f"fixes[{index}]"
    if not fix.HasField("position"):
        return _invalid(f"{where}.position is missing")
    lat, lng = fix.position.lat, fix.position.lng
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        return _invalid(f"{where}.position.lat must be a number in [-90, 90], got {lat}")
    if not (math.isfinite(lng) and -180.0 <= lng <= 180.0):
        return _invalid(f"{where}.position.lng must be a number in [-180, 180], got {lng}")
    accuracy = fix.accuracy_m
    if not math.isfinite(accuracy) or accuracy < 0 or accuracy > settings.ingest_max_accuracy_m:
        return _invalid(
            f"{where}.accuracy_m must be in [0, {settings.ingest_max_accuracy_m:g}], got {accuracy}"
        )
    # Negative speed and heading mean "unknown"; NaN or absurd values are refused.
    if not math.isfinite(fix.speed_mps) or fix.speed_mps > settings.ingest_max_speed_mps:
        return _invalid(
            f"{where}.speed_mps must be at most {settings.ingest_max_speed_mps:g} m/s, "
            f"got {fix.speed_mps}"
        )
    if not math.isfinite(fix.heading_deg) or fix.heading_deg >= 360.0:
        return _invalid(f"{where}.heading_deg must be below 360 (negative = unknown)")
    if not fix.HasField("captured_at"):
        return _invalid(f"{where}.captured_at is missing")
    return _check_time(fix.captured_at, f"{where}.captured_at", settings, now_s)


def _check_time(
    ts: timestamp_pb2.Timestamp, field: str, settings: Settings, now_s: float
) -> Refusal | None:
    """A time the app captured: well formed (consumers convert it after the ack, where a
    malformed one would be lost), not further ahead or back than the settings allow."""
    malformed = timestamp_problem(ts, field)
    if malformed is not None:
        return _invalid(malformed)
    at = ts.seconds + ts.nanos / 1e9
    if at > now_s + settings.ingest_max_future_s:
        return _invalid(
            f"{field} is {at - now_s:.0f} s in the future "
            f"(at most {settings.ingest_max_future_s:g} s allowed)"
        )
    if at < now_s - settings.ingest_max_age_s:
        return _invalid(
            f"{field} is {now_s - at:.0f} s old (at most {settings.ingest_max_age_s:g} s allowed)"
        )
    return None


def check_batch(
    batch: driver_pb2.LocationBatch, settings: Settings, now_s: float
) -> Refusal | None:
    """A location batch: 1..max fixes, each valid, oldest first."""
    count = len(batch.fixes)
    if count == 0:
        return _invalid("locations.fixes is empty")
    if count > settings.ingest_max_batch_size:
        return _invalid(
            f"locations.fixes has {count} fixes, at most {settings.ingest_max_batch_size} allowed"
        )
    previous = -math.inf
    for index, fix in enumerate(batch.fixes):
        refusal = check_fix(fix, index, settings, now_s)
        if refusal is not None:
            return refusal
        captured = fix.captured_at.seconds + fix.captured_at.nanos / 1e9
        if captured < previous:
            return _invalid(f"fixes[{index}].captured_at is earlier than fixes[{index - 1}]")
        previous = captured
    return None


def _check_position(message: common_pb2.LatLng, field: str) -> Refusal | None:
    problem = position_problem(message.lat, message.lng, field)
    return None if problem is None else _invalid(problem)


def check_event(
    request: driver_service_pb2.ConnectRequest, settings: Settings, now_s: float
) -> Refusal | None:
    """Any event after Hello: its content (sequence rules are the gateway's, see service)."""
    kind = request.WhichOneof("event")
    if kind is None:
        return _invalid("the event is empty (set one of locations, status, stop, ...)")
    if kind == "hello":
        return Refusal(FAILED_PRECONDITION, "Hello is only allowed as the first message")
    if kind == "locations":
        return check_batch(request.locations, settings, now_s)
    event = getattr(request, kind)
    # These events end up in PostgreSQL and on the bus: text it can store, of a sane length.
    text = text_problem(event, kind)
    if text is not None:
        return _invalid(text)
    if kind in _TIMED and event.HasField("at"):
        refusal = _check_time(event.at, f"{kind}.at", settings, now_s)
        if refusal is not None:
            return refusal
    if kind == "status":
        problem = enum_problem(
            request.status.status, common_pb2.DriverStatus.DESCRIPTOR, "status.status"
        )
        return None if problem is None else _invalid(problem)
    if kind == "stop":
        stop = request.stop
        if not stop.order_id:
            return _invalid("stop.order_id is empty")
        problem = enum_problem(stop.kind, driver_pb2.StopEventKind.DESCRIPTOR, "stop.kind")
        if problem is not None:
            return _invalid(problem)
        return (
            _check_position(stop.position, "stop.position") if stop.HasField("position") else None
        )
    if kind == "offer_answer":
        return None if request.offer_answer.offer_id else _invalid("offer_answer.offer_id is empty")
    if kind == "failed_attempt":
        attempt = request.failed_attempt
        if not attempt.order_id:
            return _invalid("failed_attempt.order_id is empty")
        problem = enum_problem(
            attempt.reason, common_pb2.FailureReason.DESCRIPTOR, "failed_attempt.reason"
        )
        if problem is not None:
            return _invalid(problem)
        if attempt.HasField("position"):
            return _check_position(attempt.position, "failed_attempt.position")
        return None
    if kind == "route_ack":
        if not request.route_ack.route_id:
            return _invalid("route_ack.route_id is empty")
        # Versions are stored as PostgreSQL integers: a larger one names no version.
        if request.route_ack.version > MAX_ROUTE_VERSION:
            return _invalid(f"route_ack.version is above {MAX_ROUTE_VERSION}")
        return None
    return _invalid(f"unknown event {kind}")


def check_seq(seq: int, previous_on_stream: int) -> Refusal | None:
    """Sequence numbers: at least 1, below 2**53, and increasing along one stream."""
    if seq == 0:
        return Refusal(FAILED_PRECONDITION, "seq must be at least 1 (0 is for Hello only)")
    if seq >= MAX_SEQ:
        return _invalid(f"seq must be below 2**53, got {seq}")
    if seq <= previous_on_stream:
        return Refusal(
            FAILED_PRECONDITION,
            f"seq {seq} goes backwards: this stream already sent seq {previous_on_stream}",
        )
    return None
