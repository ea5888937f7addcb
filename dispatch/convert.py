"""Conversions between protobuf messages and the database's values (timestamps, windows,
addresses, instructions), and the validation of what clients send in them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2

from core import inputs
from core.errors import InvalidArgument
from core.inputs import check_enum, client_datetime

MAX_INSTRUCTIONS_TEXT = 500
MAX_ACCESS_NOTES = 500


def now() -> dt.datetime:
    """The current UTC time."""
    return dt.datetime.now(dt.UTC)


def to_datetime(ts: Timestamp, field: str) -> dt.datetime:
    """A timezone-aware UTC datetime of a Timestamp; INVALID_ARGUMENT naming ``field`` when
    a client sent one out of range."""
    return client_datetime(ts, field)


def to_timestamp(value: dt.datetime | None) -> Timestamp | None:
    """A Timestamp of a datetime, None for None."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def window_of(start: dt.datetime | None, end: dt.datetime | None) -> common_pb2.TimeWindow | None:
    """A TimeWindow from stored bounds; None when unset."""
    if start is None or end is None:
        return None
    return common_pb2.TimeWindow(start=to_timestamp(start), end=to_timestamp(end))


def window_bounds(
    window: common_pb2.TimeWindow, field: str, present: bool
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(start, end) of a window a client sent; (None, None) when absent. INVALID_ARGUMENT
    unless both bounds are set and end > start."""
    if not present:
        return None, None
    if not (window.HasField("start") and window.HasField("end")):
        raise InvalidArgument(f"{field} needs both start and end")
    start, end = (
        to_datetime(window.start, f"{field}.start"),
        to_datetime(window.end, f"{field}.end"),
    )
    if end <= start:
        raise InvalidArgument(f"{field} must end after it starts")
    return start, end


def check_position(position: common_pb2.LatLng, field: str) -> tuple[float, float]:
    """(lat, lng) of a client position; INVALID_ARGUMENT when out of range or (0, 0)."""
    lat, lng = position.lat, position.lng
    inputs.check_position(lat, lng, field)
    if lat == 0.0 and lng == 0.0:
        raise InvalidArgument(f"{field} is missing (0, 0 is not a delivery address)")
    return lat, lng


def check_instructions(instructions: common_pb2.DeliveryInstructions) -> None:
    """INVALID_ARGUMENT for over-long text or an unknown preference."""
    if len(instructions.text) > MAX_INSTRUCTIONS_TEXT:
        raise InvalidArgument(f"instructions.text is longer than {MAX_INSTRUCTIONS_TEXT} chars")
    check_enum(
        instructions.preference,
        common_pb2.DropOffPreference.DESCRIPTOR,
        "instructions.preference",
        unset_ok=True,
    )


def check_access_notes(address: common_pb2.Address, field: str) -> None:
    """INVALID_ARGUMENT for over-long access notes (drivers read them at the stop)."""
    if len(address.access_notes) > MAX_ACCESS_NOTES:
        raise InvalidArgument(f"{field}.access_notes is longer than {MAX_ACCESS_NOTES} chars")


def message_json(message: Any) -> str:
    """A message as compact JSON for a jsonb column (field names as in the proto)."""
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def message_from_json(raw: str | dict[str, Any] | None, message: Any) -> Any:
    """Fill ``message`` from a jsonb value (asyncpg returns jsonb as text)."""
    data = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return json_format.ParseDict(data, message, ignore_unknown_fields=True)
