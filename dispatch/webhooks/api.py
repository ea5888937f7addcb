"""RPC handlers of WebhookService (mixed into ``dispatch.service.Webhooks``): dispatcher or
service token, the tenant from the token; validation of what integrators register."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from lastmile.integration.v1 import integration_pb2 as ipb
from lastmile.integration.v1 import integration_service_pb2 as pb

from core.auth import Role, require
from core.errors import InvalidArgument
from core.inputs import check_enum
from dispatch.context import DispatchContext
from dispatch.paging import page_size
from dispatch.webhooks import store
from dispatch.webhooks.events import EVENT_TYPES

STAFF = (Role.DISPATCHER, Role.SERVICE)
Context = Any  # grpc.aio.ServicerContext; the handlers do not use it
MAX_URL_LENGTH = 2048


def check_url(url: str) -> str:
    """The URL to deliver to: absolute http(s) with a host, no credentials, no fragment."""
    if not url:
        raise InvalidArgument("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise InvalidArgument("url must not contain spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"url must be http or https, not {parts.scheme or 'relative'!r}")
    if not parts.hostname:
        raise InvalidArgument("url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not carry credentials (verify the signature instead)")
    if parts.fragment:
        raise InvalidArgument("url must not have a #fragment")
    if port == 0:
        raise InvalidArgument("url has port 0")
    return url


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """Known types, duplicates dropped (order kept); empty = every type."""
    unknown = sorted({t for t in event_types if t not in EVENT_TYPES})
    if unknown:
        raise InvalidArgument(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(event_types))


class WebhookHandlers:
    """WebhookService RPCs."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.CreateWebhookResponse:
        """Register a webhook; the answer carries its signing secret, shown only here."""
        tenant_id = require(*STAFF).tenant_id
        url = check_url(request.url.strip())
        event_types = check_event_types(request.event_types)
        async with self._ctx.database.pool.acquire() as conn:
            webhook = await store.create_webhook(conn, tenant_id, url, event_types)
        return pb.CreateWebhookResponse(webhook=webhook)

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        """The tenant's webhooks, secrets omitted."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            return pb.ListWebhooksResponse(webhooks=await store.list_webhooks(conn, tenant_id))

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.DeleteWebhookResponse:
        """Delete a webhook; its deliveries, pending ones included, go with it."""
        tenant_id = require(*STAFF).tenant_id
        if not request.webhook_id:
            raise InvalidArgument("webhook_id is required")
        async with self._ctx.database.pool.acquire() as conn:
            await store.delete_webhook(conn, tenant_id, request.webhook_id)
        return pb.DeleteWebhookResponse()

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        """A webhook's deliveries with their attempts, newest first, paged."""
        tenant_id = require(*STAFF).tenant_id
        if not request.webhook_id:
            raise InvalidArgument("webhook_id is required")
        check_enum(request.state, ipb.DeliveryState.DESCRIPTOR, "state", unset_ok=True)
        size = page_size(self._ctx.settings, request.page_size)
        async with self._ctx.database.pool.acquire() as conn:
            deliveries, token = await store.list_deliveries(
                conn, tenant_id, request.webhook_id, request.state, size, request.page_token
            )
        return pb.ListWebhookDeliveriesResponse(deliveries=deliveries, next_page_token=token)

    async def RedeliverWebhook(
        self, request: pb.RedeliverWebhookRequest, context: Context
    ) -> pb.RedeliverWebhookResponse:
        """A new delivery of a delivered or dead delivery's event, pending now."""
        tenant_id = require(*STAFF).tenant_id
        if not request.delivery_id:
            raise InvalidArgument("delivery_id is required")
        async with self._ctx.database.pool.acquire() as conn:
            delivery = await store.redeliver(conn, tenant_id, request.delivery_id)
        self._ctx.webhook_wakeup.set()
        return pb.RedeliverWebhookResponse(delivery=delivery)
