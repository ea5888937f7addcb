"""Customer notification texts: one template per trigger, with ``{placeholders}`` (pure).

Placeholders (all strings, filled by :func:`values_for`): ``greeting`` ("Hi Anna," or
"Hello,"), ``customer_name``, ``reference`` (the integrator's reference, else the order id),
``window`` ("on 01 May between 14:00 and 15:00"), ``window_end`` ("15:00"), ``time`` (when
the triggering event happened, "14:32"), ``failure_reason`` ("nobody was at home"), ``eta``
and ``delay_min`` (delays only). Times are shown in ``LASTMILE_NOTIFY_TIMEZONE``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from lastmile.common.v1 import common_pb2

ASSIGNED = "assigned"
PICKED_UP = "picked_up"
NEARBY = "nearby"
DELIVERED = "delivered"
FAILED = "failed"
RESCHEDULED = "rescheduled"
DELAYED = "delayed"

TEMPLATES: dict[str, str] = {
    ASSIGNED: "{greeting} a driver will bring your order {reference} {window}.",
    PICKED_UP: "{greeting} your order {reference} is on its way.",
    NEARBY: "{greeting} your driver is nearly there with your order {reference}.",
    DELIVERED: "{greeting} your order {reference} was delivered at {time}.",
    FAILED: (
        "{greeting} we could not deliver your order {reference}: {failure_reason}."
        " We will be in touch."
    ),
    RESCHEDULED: "{greeting} your order {reference} will now arrive {window}.",
    DELAYED: (
        "{greeting} sorry, your order {reference} is running late: it should arrive at {eta},"
        " about {delay_min} min after the promised {window_end}."
    ),
}
PLACEHOLDERS = frozenset(
    {
        "greeting",
        "customer_name",
        "reference",
        "window",
        "window_end",
        "time",
        "failure_reason",
        "eta",
        "delay_min",
    }
)
FAILURE_REASONS: dict[int, str] = {
    common_pb2.FAILURE_REASON_NOT_HOME: "nobody was at home",
    common_pb2.FAILURE_REASON_WRONG_ADDRESS: "the address could not be found",
    common_pb2.FAILURE_REASON_ACCESS_PROBLEM: "the driver could not get to the door",
    common_pb2.FAILURE_REASON_REFUSED: "the parcel was refused",
    common_pb2.FAILURE_REASON_DAMAGED: "the parcel was damaged",
}


def render(trigger: str, values: Mapping[str, str]) -> str:
    """The text of ``trigger`` with ``values`` filled in (KeyError for an unknown trigger or
    a missing placeholder: templates and values are both ours, so that is a bug)."""
    return TEMPLATES[trigger].format_map(dict(values))


def values_for(
    order: Mapping[str, Any],
    zone: ZoneInfo,
    at: dt.datetime,
    eta: dt.datetime | None = None,
) -> dict[str, str]:
    """Every placeholder's value for an order row (``customer_name``, ``external_ref``,
    ``order_id``, ``drop_off_start``/``_end``, ``last_failure_reason``) at time ``at``."""
    name = str(order.get("customer_name") or "").strip()
    start, end = order.get("drop_off_start"), order.get("drop_off_end")
    delay_min = ""
    if eta is not None and end is not None:
        delay_min = str(max(0, round((eta - end).total_seconds() / 60)))
    return {
        "greeting": f"Hi {name}," if name else "Hello,",
        "customer_name": name,
        "reference": str(order.get("external_ref") or order["order_id"]),
        "window": _window(start, end, zone),
        "window_end": _clock(end, zone) if end is not None else "",
        "time": _clock(at, zone),
        "failure_reason": FAILURE_REASONS.get(
            int(order.get("last_failure_reason") or 0), "the delivery could not be completed"
        ),
        "eta": _clock(eta, zone) if eta is not None else "",
        "delay_min": delay_min,
    }


def _clock(value: dt.datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%H:%M")


def _window(start: dt.datetime | None, end: dt.datetime | None, zone: ZoneInfo) -> str:
    if start is None or end is None:
        return "soon"
    local = start.astimezone(zone)
    return f"on {local:%d %b} between {local:%H:%M} and {_clock(end, zone)}"
