"""Webhooks and their delivery log in PostgreSQL: registration, listing, deletion, the
paged delivery log with its attempts, and manual redelivery."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lastmile.integration.v1 import integration_pb2 as ipb

from core.errors import FailedPrecondition, NotFound
from dispatch.convert import to_timestamp
from dispatch.paging import decode_token, encode_token
from dispatch.webhooks.queue import PENDING, RETRYING

if TYPE_CHECKING:
    from core.db import Conn

Row = Mapping[str, Any]
_DELIVERY_COLUMNS = (
    "delivery_id, seq, webhook_id, event_id, event_type, order_id, state, attempt_count,"
    " next_attempt_at, created_at, delivered_at, redelivery_of"
)


def new_secret() -> str:
    """A signing secret: 256 random bits, URL-safe."""
    return "whsec_" + secrets.token_urlsafe(32)


async def create_webhook(
    conn: Conn, tenant_id: str, url: str, event_types: Sequence[str]
) -> ipb.Webhook:
    """Register a webhook (inputs already validated); the message carries the secret."""
    row = await conn.fetchrow(
        "INSERT INTO webhooks (webhook_id, tenant_id, url, event_types, signing_secret)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *",
        "wh_" + uuid.uuid4().hex,
        tenant_id,
        url,
        list(event_types),
        new_secret(),
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    message = webhook_message(row)
    message.signing_secret = row["signing_secret"]
    return message


def webhook_message(row: Row) -> ipb.Webhook:
    """The Webhook message of a row, without its secret."""
    return ipb.Webhook(
        webhook_id=row["webhook_id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        enabled=row["enabled"],
        created_at=to_timestamp(row["created_at"]),
    )


async def list_webhooks(conn: Conn, tenant_id: str) -> list[ipb.Webhook]:
    """The tenant's webhooks, oldest first, secrets omitted."""
    rows = await conn.fetch(
        "SELECT * FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, webhook_id", tenant_id
    )
    return [webhook_message(r) for r in rows]


async def delete_webhook(conn: Conn, tenant_id: str, webhook_id: str) -> None:
    """Delete a webhook with its deliveries and their attempts; NotFound when not the
    tenant's."""
    deleted = await conn.fetchval(
        "DELETE FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2 RETURNING webhook_id",
        webhook_id,
        tenant_id,
    )
    if deleted is None:
        raise NotFound(f"webhook {webhook_id!r} not found")


async def _check_webhook(conn: Conn, tenant_id: str, webhook_id: str) -> None:
    found = await conn.fetchval(
        "SELECT 1 FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    if found is None:
        raise NotFound(f"webhook {webhook_id!r} not found")


async def list_deliveries(
    conn: Conn, tenant_id: str, webhook_id: str, state: int, size: int, page_token: str
) -> tuple[list[ipb.WebhookDelivery], str]:
    """One page of a webhook's deliveries, newest first, with their attempts; ``state`` 0 =
    any. Returns the page and the next page's token ('' after the last)."""
    position = decode_token(page_token, 1)
    await _check_webhook(conn, tenant_id, webhook_id)
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1"
        " AND ($2 = 0 OR state = $2) AND ($3::bigint IS NULL OR seq < $3)"
        " ORDER BY seq DESC LIMIT $4",
        webhook_id,
        state,
        int(position[0]) if position else None,
        size + 1,
    )
    page = rows[:size]
    attempts = await _attempts(conn, [r["delivery_id"] for r in page])
    token = encode_token([page[-1]["seq"]]) if len(rows) > size else ""
    return [delivery_message(r, attempts.get(r["delivery_id"], [])) for r in page], token


async def _attempts(conn: Conn, delivery_ids: list[str]) -> dict[str, list[ipb.DeliveryAttempt]]:
    rows = await conn.fetch(
        "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[])"
        " ORDER BY delivery_id, attempt",
        delivery_ids,
    )
    found: dict[str, list[ipb.DeliveryAttempt]] = {}
    for r in rows:
        found.setdefault(r["delivery_id"], []).append(
            ipb.DeliveryAttempt(
                at=to_timestamp(r["at"]),
                response_code=r["response_code"],
                latency_ms=r["latency_ms"],
                error=r["error"],
                attempt=r["attempt"],
                succeeded=r["succeeded"],
            )
        )
    return found


def delivery_message(row: Row, attempts: Sequence[ipb.DeliveryAttempt]) -> ipb.WebhookDelivery:
    """The WebhookDelivery message of a row and its attempts."""
    state = int(row["state"])
    return ipb.WebhookDelivery(
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        order_id=row["order_id"],
        state=state,  # type: ignore[arg-type]
        attempts=list(attempts),
        event_id=row["event_id"],
        created_at=to_timestamp(row["created_at"]),
        next_attempt_at=to_timestamp(
            row["next_attempt_at"] if state in (PENDING, RETRYING) else None
        ),
        delivered_at=to_timestamp(row["delivered_at"]),
        redelivery_of=row["redelivery_of"] or "",
        attempt_count=row["attempt_count"],
    )


async def redeliver(conn: Conn, tenant_id: str, delivery_id: str) -> ipb.WebhookDelivery:
    """A new delivery of the same event to the same webhook, pending now. NotFound unless the
    tenant's; FailedPrecondition while the delivery is still open (it will be sent anyway)."""
    original = await conn.fetchrow(
        "SELECT * FROM webhook_deliveries WHERE delivery_id = $1 AND tenant_id = $2",
        delivery_id,
        tenant_id,
    )
    if original is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    if original["state"] in (PENDING, RETRYING):
        raise FailedPrecondition(
            f"delivery {delivery_id!r} is still being delivered; redeliver it once it is"
            " delivered or dead"
        )
    row = await conn.fetchrow(
        "INSERT INTO webhook_deliveries (delivery_id, webhook_id, tenant_id, event_id,"
        " event_type, order_id, body, redelivery_of) SELECT $2, webhook_id, tenant_id,"
        " event_id, event_type, order_id, body, delivery_id FROM webhook_deliveries"
        f" WHERE delivery_id = $1 RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
        "dlv_" + uuid.uuid4().hex,
    )
    assert row is not None  # the original exists (checked above)
    return delivery_message(row, [])
