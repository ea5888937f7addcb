"""Customer notifications: rendered from the templates, deduplicated in PostgreSQL, sent
through a :class:`NotificationChannel`.

Triggers: status changes customers care about (assigned, picked up, nearby, delivered,
failed, rescheduled; from the order events the fan-in reads) and delays (dispatch.webhooks.
delays). The key (order, trigger, scope, sequence) is recorded in ``customer_notifications``
in the same transaction as the send of the default channel, so a replayed trigger never
notifies twice. The default channel is a ``customer.notification`` webhook event to the
integrator, whose SMS or push provider then reaches the customer through the same signed,
retried pipeline as every other event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lastmile.dispatch.v1 import dispatch_pb2

from dispatch import state_machine as sm
from dispatch.webhooks import queue, templates
from dispatch.webhooks.events import CUSTOMER_NOTIFICATION, WebhookEvent

if TYPE_CHECKING:
    from core.db import Conn

#: The status reached -> the notification trigger.
STATUS_TRIGGERS: dict[int, str] = {
    sm.ASSIGNED: templates.ASSIGNED,
    sm.PICKED_UP: templates.PICKED_UP,
    sm.NEARBY: templates.NEARBY,
    sm.DELIVERED: templates.DELIVERED,
    sm.FAILED: templates.FAILED,
    sm.RESCHEDULED: templates.RESCHEDULED,
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One rendered notification for the customer of an order, with its dedupe key
    (``order_id``, ``trigger``, ``scope``, ``sequence``)."""

    tenant_id: str
    order_id: str
    trigger: str
    sequence: int
    text: str
    at: dt.datetime
    scope: str = ""
    customer_name: str = ""
    customer_phone: str = ""
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The dedupe key as one string (also the webhook event id's tail)."""
        return f"{self.order_id}:{self.trigger}:{self.scope}:{self.sequence}"


class NotificationChannel(Protocol):
    """Sends a rendered notification to the customer, inside the caller's transaction (a
    channel that cannot take part in it sends at least once: a rollback after its send is
    followed by a replay)."""

    async def send(self, conn: Conn, note: Notification) -> None:
        """Hand ``note`` over for sending."""


class WebhookChannel:
    """The default channel: a ``customer.notification`` webhook event for the tenant's
    webhooks subscribed to it (exactly once: same transaction as the dedupe row)."""

    async def send(self, conn: Conn, note: Notification) -> None:
        """Queue one delivery per subscribed webhook."""
        data = {
            "trigger": note.trigger,
            "text": note.text,
            "customer_name": note.customer_name,
            "customer_phone": note.customer_phone,
            "values": dict(note.values),
        }
        event = WebhookEvent(
            f"notification:{note.key}",
            CUSTOMER_NOTIFICATION,
            note.tenant_id,
            note.order_id,
            note.at,
            data,
        )
        await queue.enqueue(conn, event)


def zone_of(name: str) -> ZoneInfo:
    """The time zone of notification texts; ValueError naming the setting when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"LASTMILE_NOTIFY_TIMEZONE={name!r} is not a known time zone") from exc


def build(
    order: Mapping[str, Any],
    trigger: str,
    sequence: int,
    at: dt.datetime,
    zone: ZoneInfo,
    scope: str = "",
    eta: dt.datetime | None = None,
) -> Notification:
    """The notification of ``trigger`` for an order row."""
    values = templates.values_for(order, zone, at, eta)
    return Notification(
        tenant_id=order["tenant_id"],
        order_id=order["order_id"],
        trigger=trigger,
        sequence=sequence,
        text=templates.render(trigger, values),
        at=at,
        scope=scope,
        customer_name=str(order.get("customer_name") or ""),
        customer_phone=str(order.get("customer_phone") or ""),
        values=values,
    )


def status_trigger(event: dispatch_pb2.OrderEvent) -> str | None:
    """The trigger of an order event: a status change customers care about, or a window
    moved again while rescheduled; None otherwise."""
    if event.from_status != event.to_status:
        return STATUS_TRIGGERS.get(event.to_status)
    if event.to_status == sm.RESCHEDULED and "window_end" in (event.details_json or ""):
        return templates.RESCHEDULED
    return None


async def notify(conn: Conn, channel: NotificationChannel, note: Notification) -> bool:
    """Record the notification's key and send it; False (nothing sent) when the key was
    recorded before."""
    inserted = await conn.fetchval(
        "INSERT INTO customer_notifications (order_id, trigger, scope, sequence, tenant_id,"
        " text) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
        note.order_id,
        note.trigger,
        note.scope,
        note.sequence,
        note.tenant_id,
        note.text,
    )
    if not inserted:
        return False
    await channel.send(conn, note)
    return True
