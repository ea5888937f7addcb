"""The delivery queue in PostgreSQL: deliveries in (one per matching webhook and event),
claims by the sender, and the outcome of each attempt.

Per-order ordering: a delivery is claimable only when no open (pending or retrying) delivery
of the same webhook and order has a lower ``seq``. A dead-lettered delivery is not open, so
it holds the deliveries after it back only until its last attempt failed. Claims take rows
``FOR UPDATE SKIP LOCKED`` and move ``next_attempt_at`` forward by a lease, so two dispatch
replicas never send one delivery at once; a sender that dies mid-send leaves the delivery
due again when the lease ends (at-least-once: the repeat carries the same delivery id).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lastmile.integration.v1 import integration_pb2 as ipb

from core.settings import Settings
from dispatch.webhooks.events import WebhookEvent

if TYPE_CHECKING:
    from core.db import Conn

PENDING = ipb.DELIVERY_STATE_PENDING
DELIVERED = ipb.DELIVERY_STATE_DELIVERED
RETRYING = ipb.DELIVERY_STATE_RETRYING
DEAD = ipb.DELIVERY_STATE_DEAD
#: Extra lease time on top of the HTTP timeout, for recording the outcome.
LEASE_MARGIN_S = 5.0

_ENQUEUE = """
INSERT INTO webhook_deliveries
    (delivery_id, webhook_id, tenant_id, event_id, event_type, order_id, body)
SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), w.webhook_id, w.tenant_id,
       $2, $3, $4, $5
FROM webhooks w
WHERE w.tenant_id = $1 AND w.enabled
  AND (cardinality(w.event_types) = 0 OR $3 = ANY(w.event_types))
ORDER BY w.webhook_id
ON CONFLICT (webhook_id, event_id) WHERE redelivery_of IS NULL DO NOTHING
"""

_CLAIM = """
SELECT d.delivery_id, d.event_type, d.body, w.url, w.signing_secret
FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id
WHERE d.state IN (1, 3) AND d.next_attempt_at <= now() AND w.enabled
  AND NOT EXISTS (
    SELECT 1 FROM webhook_deliveries e
    WHERE d.order_id <> '' AND e.webhook_id = d.webhook_id AND e.order_id = d.order_id
      AND e.state IN (1, 3) AND e.seq < d.seq)
ORDER BY d.seq
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery the sender holds the lease of, with what it needs to send it."""

    delivery_id: str
    event_type: str
    body: str
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one HTTP attempt."""

    started_at: dt.datetime
    response_code: int
    latency_ms: float
    error: str

    @property
    def succeeded(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.response_code < 300


async def enqueue(conn: Conn, event: WebhookEvent) -> int:
    """One pending delivery per enabled webhook of the tenant subscribed to the event's
    type; a replayed event inserts nothing. Returns how many were inserted."""
    status = await conn.execute(
        _ENQUEUE, event.tenant_id, event.event_id, event.event_type, event.order_id, event.body()
    )
    return int(status.rsplit(" ", 1)[-1])


async def claim(conn: Conn, limit: int, lease_s: float) -> list[Claimed]:
    """Take up to ``limit`` due deliveries (heads of their order's queue), leased for
    ``lease_s`` seconds."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, limit)
        if not rows:
            return []
        await conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $2)"
            " WHERE delivery_id = ANY($1::text[])",
            [r["delivery_id"] for r in rows],
            lease_s,
        )
    return [
        Claimed(r["delivery_id"], r["event_type"], r["body"], r["url"], r["signing_secret"])
        for r in rows
    ]


def backoff_s(settings: Settings, failures: int) -> float:
    """Wait after the ``failures``-th failed attempt: base x 2^(failures-1), capped."""
    exponent = min(max(failures - 1, 0), 30)
    return float(min(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2**exponent))


async def record(conn: Conn, settings: Settings, delivery_id: str, outcome: Outcome) -> int | None:
    """Log the attempt and move the delivery on: delivered on 2xx, else retrying after the
    backoff, or dead after ``webhook_max_attempts``. Returns the new state, None when the
    delivery is gone (its webhook was deleted meanwhile). A late outcome of a delivery that
    is no longer open (another sender finished it after a lease ran out) is only logged."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT state, attempt_count FROM webhook_deliveries WHERE delivery_id = $1 FOR UPDATE",
            delivery_id,
        )
        if row is None:
            return None
        attempt = int(row["attempt_count"]) + 1
        await conn.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, response_code, latency_ms,"
            " error, succeeded) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            delivery_id,
            attempt,
            outcome.started_at,
            outcome.response_code,
            outcome.latency_ms,
            outcome.error,
            outcome.succeeded,
        )
        state = int(row["state"])
        if state not in (PENDING, RETRYING):
            pass
        elif outcome.succeeded:
            state = DELIVERED
        elif attempt >= settings.webhook_max_attempts:
            state = DEAD
        else:
            state = RETRYING
        await conn.execute(
            "UPDATE webhook_deliveries SET attempt_count = $2, state = $3::smallint,"
            " delivered_at = CASE WHEN $3::smallint = 2 THEN coalesce(delivered_at, now()) END,"
            " next_attempt_at = now() + make_interval(secs => $4) WHERE delivery_id = $1",
            delivery_id,
            attempt,
            state,
            backoff_s(settings, attempt),
        )
    return state
