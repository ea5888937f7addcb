"""Customer notification texts and the pure parts of webhook events: every template renders
with the values built from an order, triggers and event types come from the right changes,
and delay levels grow one margin at a time."""

from __future__ import annotations

import datetime as dt
import json
import string
from zoneinfo import ZoneInfo

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2

from dispatch import state_machine as sm
from dispatch.webhooks import events, notifications, templates
from dispatch.webhooks.delays import delay_level

UTC = ZoneInfo("UTC")
AT = dt.datetime(2024, 5, 1, 14, 32, tzinfo=dt.UTC)
ORDER = {
    "order_id": "ord_1",
    "tenant_id": "t1",
    "external_ref": "A-42",
    "customer_name": "Anna",
    "customer_phone": "+356 2100 0000",
    "drop_off_start": dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.UTC),
    "drop_off_end": dt.datetime(2024, 5, 1, 15, 0, tzinfo=dt.UTC),
    "last_failure_reason": common_pb2.FAILURE_REASON_NOT_HOME,
}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_templates_use_only_known_placeholders_and_cover_every_trigger() -> None:
    assert set(templates.TEMPLATES) == {*notifications.STATUS_TRIGGERS.values(), "delayed"}
    for trigger, template in templates.TEMPLATES.items():
        assert _fields(template) <= templates.PLACEHOLDERS, trigger


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        (
            "assigned",
            "Hi Anna, a driver will bring your order A-42 on 01 May between 14:00 and 15:00.",
        ),
        ("picked_up", "Hi Anna, your order A-42 is on its way."),
        ("nearby", "Hi Anna, your driver is nearly there with your order A-42."),
        ("delivered", "Hi Anna, your order A-42 was delivered at 14:32."),
        (
            "failed",
            "Hi Anna, we could not deliver your order A-42: nobody was at home."
            " We will be in touch.",
        ),
        (
            "rescheduled",
            "Hi Anna, your order A-42 will now arrive on 01 May between 14:00 and 15:00.",
        ),
    ],
)
def test_status_texts(trigger: str, text: str) -> None:
    assert templates.render(trigger, templates.values_for(ORDER, UTC, AT)) == text


def test_the_delay_text_says_when_and_how_late() -> None:
    eta = dt.datetime(2024, 5, 1, 15, 25, 20, tzinfo=dt.UTC)
    values = templates.values_for(ORDER, UTC, AT, eta=eta)
    assert templates.render("delayed", values) == (
        "Hi Anna, sorry, your order A-42 is running late: it should arrive at 15:25,"
        " about 25 min after the promised 15:00."
    )


def test_times_are_shown_in_the_configured_zone_and_fallbacks_fill_gaps() -> None:
    order = {**ORDER, "customer_name": "", "external_ref": "", "last_failure_reason": 0}
    order["drop_off_start"] = order["drop_off_end"] = None
    values = templates.values_for(order, ZoneInfo("Europe/Malta"), AT)
    assert values["greeting"] == "Hello,"
    assert values["reference"] == "ord_1"
    assert values["window"] == "soon"
    assert values["time"] == "16:32"  # CEST
    assert values["failure_reason"] == "the delivery could not be completed"


def test_an_unknown_zone_names_the_setting() -> None:
    with pytest.raises(ValueError, match="LASTMILE_NOTIFY_TIMEZONE"):
        notifications.zone_of("Mars/Olympus")


def test_build_keys_the_notification_by_order_trigger_scope_and_sequence() -> None:
    note = notifications.build(ORDER, "picked_up", 5, AT, UTC)
    assert (note.order_id, note.trigger, note.sequence, note.scope) == ("ord_1", "picked_up", 5, "")
    assert note.key == "ord_1:picked_up::5"
    assert note.customer_phone == "+356 2100 0000"


def _event(
    event_type: str, from_status: int, to_status: int, **details: str
) -> dispatch_pb2.OrderEvent:
    return dispatch_pb2.OrderEvent(
        order_id="ord_1",
        sequence=3,
        event_type=event_type,
        from_status=from_status,  # type: ignore[arg-type]
        to_status=to_status,  # type: ignore[arg-type]
        details_json=json.dumps(details),
    )


@pytest.mark.parametrize(
    ("event", "webhook_type", "trigger"),
    [
        (_event("created", 0, sm.PENDING), "order.created", None),
        (_event("assigned", sm.PENDING, sm.ASSIGNED), "order.assigned", "assigned"),
        (_event("offered", sm.PENDING, sm.OFFERED), None, None),
        (_event("to_pickup", sm.ASSIGNED, sm.TO_PICKUP), None, None),
        (_event("picked_up", sm.AT_PICKUP, sm.PICKED_UP), "order.picked_up", "picked_up"),
        (_event("nearby", sm.PICKED_UP, sm.NEARBY), "order.nearby", "nearby"),
        (_event("delivered", sm.NEARBY, sm.DELIVERED), "order.delivered", "delivered"),
        (_event("attempt_failed", sm.NEARBY, sm.FAILED), "order.failed", "failed"),
        (_event("cancelled", sm.PENDING, sm.CANCELLED), "order.cancelled", None),
        (_event("returned_to_origin", sm.FAILED, sm.RETURNED), "order.returned", None),
        (
            _event("rescheduled", sm.RESCHEDULED, sm.RESCHEDULED, window_end="x"),
            "order.rescheduled",
            "rescheduled",
        ),
        (_event("instructions_updated", sm.ASSIGNED, sm.ASSIGNED), None, None),
    ],
)
def test_order_events_map_to_webhook_types_and_triggers(
    event: dispatch_pb2.OrderEvent, webhook_type: str | None, trigger: str | None
) -> None:
    assert events.order_event_type(event) == webhook_type
    assert notifications.status_trigger(event) == trigger
    made = events.from_order_event("t1", event)
    assert (made.event_type if made else None) == webhook_type
    if made is not None:
        assert made.event_id == "order:ord_1:3"


def test_the_body_is_the_documented_envelope() -> None:
    made = events.from_order_event("t1", _event("assigned", sm.PENDING, sm.ASSIGNED, driver_id="d"))
    assert made is not None
    body = json.loads(made.body())
    assert list(body) == ["id", "type", "created_at", "tenant_id", "order_id", "data"]
    assert body["data"]["status"] == "ASSIGNED"
    assert body["data"]["previous_status"] == "PENDING"
    assert body["data"]["details"] == {"driver_id": "d"}
    assert set(events.EVENT_TYPES) >= {"order.created", "proof.captured", "geofence.dwell"}


@pytest.mark.parametrize(
    ("lateness", "level"),
    [(-100, 0), (0, 0), (600, 0), (601, 1), (1199, 1), (1200, 2), (1800, 3)],
)
def test_delay_levels_grow_one_margin_at_a_time(lateness: float, level: int) -> None:
    assert delay_level(lateness, 600) == level
