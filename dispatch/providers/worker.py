"""The provider worker (a component of the dispatch process): submits orders the rules engine
gave to an external provider, re-splits those a provider refuses (fallback), polls polling
providers, and applies every provider status to the order's state machine (webhook
callbacks arrive through dispatch.providers.callbacks)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lastmile.dispatch.v1 import dispatch_pb2

from core.workers import cancel
from dispatch import areas, order_store, progress
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.order_store import Actor, Row
from dispatch.providers.callbacks import CallbackServer
from dispatch.providers.transport import (
    STATUSES,
    ExternalProvider,
    ProviderOrder,
    ProviderRefused,
    provider_for,
)
from dispatch.rules import EXTERNAL, Split

log = logging.getLogger(__name__)
BATCH = 100


class ProviderWorker:
    """See the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx
        settings = ctx.settings
        self.callbacks = CallbackServer(
            settings.host,
            settings.provider_callback_port,
            settings.provider_callback_secret,
            self.apply_status,
        )
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer: a worker."""

    async def start(self) -> None:
        """Open the callback endpoint and start the submit/poll loop."""
        await self.callbacks.start()
        self._task = asyncio.create_task(self._run(), name="providers")

    async def stop(self) -> None:
        """Stop the loop and the endpoint."""
        await cancel(self._task)
        await self.callbacks.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.submit_pending()
                await self.poll()
            except Exception:
                log.exception("provider round failed; retrying")
            await asyncio.sleep(self._ctx.settings.provider_poll_interval_s)

    def _client(self, provider: Row) -> ExternalProvider:
        settings = self._ctx.settings
        base = f"http://{settings.host}:{self.callbacks.port}"
        return provider_for(
            provider["transport"],
            provider["endpoint_url"],
            settings.provider_callback_secret,
            settings.provider_http_timeout_s,
            base,
            provider["provider_id"],
        )

    async def submit_pending(self) -> None:
        """Submit every pending external order not yet with its provider."""
        async with self._ctx.database.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT o.order_id, o.pickup_lat, o.pickup_lng, o.drop_off_lat, o.drop_off_lng,"
                " o.size_units, p.provider_id, p.transport, p.endpoint_url FROM orders o"
                " JOIN providers p ON p.provider_id = o.provider_id WHERE o.fleet = $1"
                " AND o.provider_external_id = '' AND o.status = $2 ORDER BY o.created_at"
                " LIMIT $3",
                EXTERNAL,
                sm.PENDING,
                BATCH,
            )
        for row in rows:
            order = ProviderOrder(
                row["order_id"],
                (row["pickup_lat"], row["pickup_lng"]),
                (row["drop_off_lat"], row["drop_off_lng"]),
                row["size_units"],
            )
            try:
                external_id = await self._client(dict(row)).submit(order)
            except ProviderRefused as exc:
                await self._resplit(row["order_id"], row["provider_id"], str(exc))
                continue
            await self._submitted(row["order_id"], row["provider_id"], external_id)

    async def _submitted(self, order_id: str, provider_id: str, external_id: str) -> None:
        async with self._ctx.database.pool.acquire() as conn, conn.transaction():
            row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
            if row is None or row["provider_external_id"]:
                return
            await order_store.apply_change(
                conn,
                row,
                "submitted_to_provider",
                Actor(f"provider:{provider_id}"),
                changes={"provider_external_id": external_id, "provider_status": "submitted"},
                details={"provider_id": provider_id, "external_id": external_id},
            )
        self._ctx.wake_outbox()

    async def _resplit(self, order_id: str, provider_id: str, why: str) -> None:
        """The provider refused: ask the rules engine again without it (fallback)."""
        async with self._ctx.database.pool.acquire() as conn, conn.transaction():
            row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
            if row is None or row["provider_id"] != provider_id or row["provider_external_id"]:
                return
            refused = await _refused_by(conn, order_id) | {provider_id}
            pickup = areas.Pickup(row["pickup_lat"], row["pickup_lng"], row["area_id"])
            decision = await areas.decide_split(
                conn, row["tenant_id"], order_id, row["kind"], pickup, frozenset(refused)
            )
            await order_store.apply_change(
                conn,
                row,
                "provider_refused",
                order_store.SYSTEM,
                changes={
                    "fleet": decision.fleet,
                    "provider_id": decision.provider_id or None,
                    "split_explanation": decision.explanation,
                },
                details={"refused_by": provider_id, "why": why, **_split_details(decision)},
            )
        self._ctx.wake_outbox()

    async def poll(self) -> None:
        """Ask polling providers about their open orders."""
        async with self._ctx.database.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT o.provider_external_id, p.provider_id, p.transport, p.endpoint_url"
                " FROM orders o JOIN providers p ON p.provider_id = o.provider_id"
                " WHERE p.transport = $1 AND o.provider_external_id <> ''"
                " AND o.status <> ALL($2::smallint[]) LIMIT $3",
                dispatch_pb2.PROVIDER_TRANSPORT_POLLING,
                sorted(sm.FINAL),
                BATCH,
            )
        for row in rows:
            try:
                status = await self._client(dict(row)).status(row["provider_external_id"])
            except ProviderRefused as exc:
                log.warning("provider poll failed", extra={"reason": str(exc)})
                continue
            await self.apply_status(row["provider_id"], row["provider_external_id"], status)

    async def apply_status(self, provider_id: str, external_id: str, status: str) -> bool:
        """Move the order to what the provider reports; False for an unknown order."""
        async with self._ctx.database.pool.acquire() as conn:
            order_id = await conn.fetchval(
                "SELECT order_id FROM orders WHERE provider_id = $1 AND provider_external_id = $2",
                provider_id,
                external_id,
            )
        if order_id is None:
            return False
        target = STATUSES.get(status)
        if target is None:
            log.warning("unknown provider status", extra={"status": status})
            return True
        actor = Actor(f"provider:{provider_id}")
        await progress.advance(self._ctx, order_id, target, actor, details={"status": status})
        return True


async def _refused_by(conn: Any, order_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT details->>'refused_by' AS p FROM order_events WHERE order_id = $1"
        " AND event_type = 'provider_refused'",
        order_id,
    )
    return {r["p"] for r in rows}


def _split_details(decision: Split) -> dict[str, object]:
    return {
        "fleet": decision.fleet,
        "provider_id": decision.provider_id,
        "explanation": decision.explanation,
    }
