"""Webhook event types and the events made from bus entries (pure).

Each event has a stable id (the same whichever process or replay produces it), so one event
becomes at most one delivery per webhook, and a JSON body that is stored once and POSTed as
is on every attempt: ``{id, type, created_at, tenant_id, order_id, data}``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.dispatch.v1 import dispatch_pb2
from lastmile.pod.v1 import pod_pb2
from lastmile.tracking.v1 import tracking_pb2

from dispatch import state_machine as sm

ORDER_CREATED = "order.created"
ORDER_ASSIGNED = "order.assigned"
ORDER_PICKED_UP = "order.picked_up"
ORDER_NEARBY = "order.nearby"
ORDER_DELIVERED = "order.delivered"
ORDER_FAILED = "order.failed"
ORDER_RESCHEDULED = "order.rescheduled"
ORDER_CANCELLED = "order.cancelled"
ORDER_RETURNED = "order.returned"
PROOF_CAPTURED = "proof.captured"
GEOFENCE_ENTERED = "geofence.entered"
GEOFENCE_EXITED = "geofence.exited"
GEOFENCE_DWELL = "geofence.dwell"
CUSTOMER_NOTIFICATION = "customer.notification"

#: The order status reached -> the event type announcing it (other statuses: no event).
STATUS_EVENTS: dict[int, str] = {
    sm.ASSIGNED: ORDER_ASSIGNED,
    sm.PICKED_UP: ORDER_PICKED_UP,
    sm.NEARBY: ORDER_NEARBY,
    sm.DELIVERED: ORDER_DELIVERED,
    sm.FAILED: ORDER_FAILED,
    sm.RESCHEDULED: ORDER_RESCHEDULED,
    sm.CANCELLED: ORDER_CANCELLED,
    sm.RETURNED: ORDER_RETURNED,
}
GEOFENCE_KINDS: dict[int, str] = {
    tracking_pb2.GEOFENCE_EVENT_KIND_ENTER: GEOFENCE_ENTERED,
    tracking_pb2.GEOFENCE_EVENT_KIND_EXIT: GEOFENCE_EXITED,
    tracking_pb2.GEOFENCE_EVENT_KIND_DWELL: GEOFENCE_DWELL,
}
#: Every type a webhook may subscribe to, in documentation order.
EVENT_TYPES: tuple[str, ...] = (
    ORDER_CREATED,
    *STATUS_EVENTS.values(),
    PROOF_CAPTURED,
    *GEOFENCE_KINDS.values(),
    CUSTOMER_NOTIFICATION,
)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event as integrators receive it."""

    event_id: str
    event_type: str
    tenant_id: str
    order_id: str
    occurred_at: dt.datetime
    data: dict[str, Any]

    def body(self) -> str:
        """The JSON body POSTed for this event (compact, keys in a fixed order)."""
        envelope = {
            "id": self.event_id,
            "type": self.event_type,
            "created_at": rfc3339(self.occurred_at),
            "tenant_id": self.tenant_id,
            "order_id": self.order_id,
            "data": self.data,
        }
        return json.dumps(envelope, separators=(",", ":"))


def rfc3339(value: dt.datetime) -> str:
    """``2024-05-01T12:00:00.000Z``."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(ts: Timestamp) -> dt.datetime | None:
    return ts.ToDatetime(tzinfo=dt.UTC) if ts.seconds or ts.nanos else None


def _lower(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def order_event_type(event: dispatch_pb2.OrderEvent) -> str | None:
    """The webhook type of an order event; None for changes integrators are not told about
    (offers, unassignment, the way to the pickup, instructions)."""
    if event.event_type == "created":
        return ORDER_CREATED
    if event.from_status != event.to_status:
        return STATUS_EVENTS.get(event.to_status)
    if event.to_status == sm.RESCHEDULED and "window_end" in (event.details_json or ""):
        return ORDER_RESCHEDULED  # moved again while already rescheduled
    return None


def from_order_event(tenant_id: str, event: dispatch_pb2.OrderEvent) -> WebhookEvent | None:
    """The webhook event of an order event, None when it is not one (see above)."""
    event_type = order_event_type(event)
    if event_type is None:
        return None
    at = _time(event.at) or dt.datetime.now(dt.UTC)
    data = {
        "sequence": event.sequence,
        "status": sm.name(event.to_status),
        "previous_status": sm.name(event.from_status) if event.from_status else "",
        "change": event.event_type,
        "actor": event.actor,
        "details": json.loads(event.details_json or "{}"),
    }
    return WebhookEvent(
        f"order:{event.order_id}:{event.sequence}",
        event_type,
        tenant_id,
        event.order_id,
        at,
        data,
    )


def from_proof(tenant_id: str, proof: pod_pb2.Proof) -> WebhookEvent:
    """``proof.captured`` of a confirmed proof of delivery."""
    captured = _time(proof.captured_at)
    confirmed = _time(proof.confirmed_at) or dt.datetime.now(dt.UTC)
    data = {
        "proof_id": proof.proof_id,
        "kind": _lower(pod_pb2.ProofKind.Name(proof.kind), "PROOF_KIND_"),
        "attempt": proof.attempt,
        "driver_id": proof.driver_id,
        "captured_at": rfc3339(captured) if captured else None,
        "flagged": proof.flagged,
        "record_hash": proof.record_hash,
        "position": _position(proof.position) if proof.HasField("position") else None,
    }
    return WebhookEvent(
        f"proof:{proof.proof_id}", PROOF_CAPTURED, tenant_id, proof.order_id, confirmed, data
    )


def from_geofence(
    tenant_id: str, entry_id: str, event: tracking_pb2.GeofenceEvent
) -> WebhookEvent | None:
    """``geofence.entered/exited/dwell``; the stream entry id makes the event id (geofence
    events carry no id of their own). None for an unknown kind."""
    event_type = GEOFENCE_KINDS.get(event.kind)
    if event_type is None:
        return None
    data = {
        "geofence_id": event.geofence_id,
        "driver_id": event.driver_id,
        "position": _position(event.position) if event.HasField("position") else None,
    }
    at = _time(event.at) or dt.datetime.now(dt.UTC)
    return WebhookEvent(f"geofence:{entry_id}", event_type, tenant_id, event.order_id, at, data)


def _position(point: Any) -> dict[str, float]:
    return {"lat": point.lat, "lng": point.lng}
