"""Checks of values clients send, shared by every service: text of a sane length that
PostgreSQL can store, timestamps and durations that protobuf can convert, enum values the
contracts define, positions on the globe.

Without them such values fail deep inside a handler (PostgreSQL refuses NUL characters,
protobuf's conversions raise ``ValueError`` outside their range) and reach the caller as
INTERNAL; with them the caller reads INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import InvalidArgument

# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range of Timestamp (and of datetime).
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799
MAX_NANOS = 999_999_999
_TEXT_OR_NESTED = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE)
# The longest string any request field may carry (a URL's customary limit): no name, address
# or note is longer, and each may be written to PostgreSQL, logs and messages to others.
MAX_TEXT_CHARS = 2048
# Ids name Redis keys, pub/sub channels and token subjects as well as rows: kept short.
MAX_ID_CHARS = 128
_ID_SUFFIXES = ("_id", "_ids", "idempotency_key")


def text_problem(message: Message, path: str = "") -> str | None:
    """Why a string field under ``message`` (map keys and values included) cannot be taken,
    naming it by its dotted path, or None: a NUL character, which no text column of PostgreSQL
    can store, more than :data:`MAX_TEXT_CHARS` (:data:`MAX_ID_CHARS` for ids), or an empty
    entry in a list of ids (which names nothing: "order '' not found" would blame the data)."""
    for field, value in message.ListFields():
        if field.type not in _TEXT_OR_NESTED:
            continue
        name = f"{path}.{field.name}" if path else field.name
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            items = [*value.keys(), *value.values()]
        else:
            items = list(value) if field.is_repeated else [value]
        if field.is_repeated and field.name.endswith("_ids") and "" in items:
            return f"{name}[{items.index('')}] is empty"
        limit = MAX_ID_CHARS if field.name.endswith(_ID_SUFFIXES) else MAX_TEXT_CHARS
        for item in items:
            found = _problem_in(item, name, limit)
            if found is not None:
                return found
    return None


def _problem_in(item: object, name: str, limit: int) -> str | None:
    if isinstance(item, Message):
        return text_problem(item, name)
    if not isinstance(item, str):
        return None
    if "\x00" in item:
        return f"{name} must not contain NUL characters"
    if len(item) > limit:
        return f"{name} is longer than {limit} characters ({len(item)})"
    return None


def check_text(message: Message) -> None:
    """INVALID_ARGUMENT with :func:`text_problem`'s reason, if any."""
    problem = text_problem(message)
    if problem is not None:
        raise InvalidArgument(problem)


def timestamp_problem(ts: Timestamp, field: str) -> str | None:
    """Why ``ts`` is no valid Timestamp (outside years 1-9999, nanos outside
    0..999,999,999), or None. protobuf refuses to convert such a value later, where no caller
    is left to answer."""
    if not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S:
        return f"{field} is outside the years 1 to 9999"
    if not 0 <= ts.nanos <= MAX_NANOS:
        return f"{field}.nanos must be within 0..{MAX_NANOS}"
    return None


def client_datetime(ts: Timestamp, field: str) -> dt.datetime:
    """A client Timestamp as an aware UTC datetime; INVALID_ARGUMENT with
    :func:`timestamp_problem`'s reason when it is malformed."""
    problem = timestamp_problem(ts, field)
    if problem is not None:
        raise InvalidArgument(problem)
    return ts.ToDatetime(tzinfo=dt.UTC)


def client_range(request: Message, longest: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """The required ``start`` and ``end`` Timestamps of ``request`` as a time range [start,
    end) of at most ``longest``; INVALID_ARGUMENT saying what is wrong otherwise."""
    if not request.HasField("start") or not request.HasField("end"):
        raise InvalidArgument("start and end are required")
    ranged: Any = request  # any message with Timestamp fields start and end
    start = client_datetime(ranged.start, "start")
    end = client_datetime(ranged.end, "end")
    if end <= start:
        raise InvalidArgument("end must be after start")
    if end - start > longest:
        hours = longest / dt.timedelta(hours=1)
        span = f"{hours:g} hours" if hours <= 48 else f"{hours / 24:g} days"
        raise InvalidArgument(f"the time range may span at most {span}")
    return start, end


def client_seconds(duration: Duration, field: str) -> float:
    """A Duration a client sent, in seconds; INVALID_ARGUMENT when malformed (nanos out of
    range or of the other sign). Read from its fields: protobuf's own conversion to a
    timedelta overflows on the largest seconds a Duration can carry."""
    if abs(duration.nanos) > MAX_NANOS or duration.seconds * duration.nanos < 0:
        raise InvalidArgument(f"{field} is not a valid Duration (nanos out of range or sign)")
    return duration.seconds + duration.nanos / 1e9


def position_problem(lat: float, lng: float, field: str) -> str | None:
    """Why (``lat``, ``lng``) is no position on the globe (not finite, out of range), or None.
    A NaN stored in a JSON column fails there (PostgreSQL refuses the token) and one in a
    distance computation poisons every result it touches."""
    if not (math.isfinite(lat) and math.isfinite(lng)):
        return f"{field} must have finite lat and lng, got ({lat}, {lng})"
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
        return f"{field} is out of range: lat {lat} (-90..90), lng {lng} (-180..180)"
    return None


def check_position(lat: float, lng: float, field: str) -> None:
    """INVALID_ARGUMENT with :func:`position_problem`'s reason, if any."""
    problem = position_problem(lat, lng, field)
    if problem is not None:
        raise InvalidArgument(problem)


def enum_problem(
    value: int, enum: EnumDescriptor, field: str, unset_ok: bool = False
) -> str | None:
    """Why ``value`` is not a value of ``enum`` (its zero, UNSPECIFIED, only if ``unset_ok``),
    or None. Protobuf keeps numbers it does not know, so an unchecked one travels on as it came:
    into a branch meant for another value, or into a SMALLINT column that refuses 32768."""
    if value == 0:
        return None if unset_ok else f"{field} is unspecified"
    if value not in enum.values_by_number:
        return f"{field}: {value} is not a {enum.name}"
    return None


def check_enum(value: int, enum: EnumDescriptor, field: str, unset_ok: bool = False) -> int:
    """``value``, or INVALID_ARGUMENT with :func:`enum_problem`'s reason."""
    problem = enum_problem(value, enum, field, unset_ok)
    if problem is not None:
        raise InvalidArgument(problem)
    return value


def enum_values(values: Iterable[int], enum: EnumDescriptor, field: str) -> frozenset[int]:
    """The values of a repeated enum field, each checked by :func:`enum_problem`."""
    found = frozenset(values)
    for value in sorted(found):
        problem = enum_problem(value, enum, field)
        if problem is not None:
            raise InvalidArgument(problem)
    return found
