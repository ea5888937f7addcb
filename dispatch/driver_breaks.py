"""Driver breaks: validated from UpsertDriver, stored as JSON, turned into solver breaks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from lastmile.dispatch.v1 import dispatch_pb2

from core.errors import InvalidArgument
from core.inputs import client_seconds
from dispatch.convert import to_datetime
from dispatch.solver.model import Break

# More breaks than this in one shift is a client bug, not a labour rule.
MAX_BREAKS = 8
MAX_BREAK_S = 12 * 3600.0


def _bounds(brk: dispatch_pb2.DriverBreak, field: str) -> tuple[dt.datetime, dt.datetime]:
    window = brk.start_window
    if not (brk.HasField("start_window") and window.HasField("start") and window.HasField("end")):
        raise InvalidArgument(f"{field}.start_window needs both start and end")
    earliest = to_datetime(window.start, f"{field}.start_window.start")
    latest = to_datetime(window.end, f"{field}.start_window.end")
    if latest < earliest:
        raise InvalidArgument(f"{field}.start_window ends before it starts")
    return earliest, latest


def duration_s(brk: dispatch_pb2.DriverBreak, field: str) -> float:
    """The break's length in seconds; INVALID_ARGUMENT for a malformed Duration."""
    return client_seconds(brk.duration, f"{field}.duration")


def breaks_json(driver: dispatch_pb2.Driver) -> str:
    """The driver's breaks as the ``drivers.breaks`` JSON; INVALID_ARGUMENT for bad ones."""
    if len(driver.breaks) > MAX_BREAKS:
        raise InvalidArgument(f"driver.breaks has {len(driver.breaks)} breaks (max {MAX_BREAKS})")
    items: list[dict[str, Any]] = []
    for k, brk in enumerate(driver.breaks):
        field = f"driver.breaks[{k}]"
        _bounds(brk, field)
        if not 0.0 < duration_s(brk, field) <= MAX_BREAK_S:
            raise InvalidArgument(f"{field}.duration must be positive and at most 12 h")
        items.append(json_format.MessageToDict(brk, preserving_proto_field_name=True))
    return json.dumps(items)


def breaks_of(raw: str | list[Any] | None) -> list[dispatch_pb2.DriverBreak]:
    """The DriverBreak messages of a stored ``drivers.breaks`` value."""
    items = json.loads(raw) if isinstance(raw, str) else (raw or [])
    return [json_format.ParseDict(item, dispatch_pb2.DriverBreak()) for item in items]


def solver_breaks(
    breaks: Sequence[dispatch_pb2.DriverBreak], start: dt.datetime
) -> tuple[Break, ...]:
    """The breaks in solver seconds from ``start``; breaks already over are dropped and a
    window already open starts now."""
    result = []
    for brk in breaks:
        earliest = (to_datetime(brk.start_window.start, "break start") - start).total_seconds()
        latest = (to_datetime(brk.start_window.end, "break end") - start).total_seconds()
        if latest < 0.0:
            continue
        result.append(Break(max(0.0, earliest), latest, duration_s(brk, "break")))
    return tuple(result)
