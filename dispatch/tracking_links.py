"""The customer's tracking link of an order: revoked (and optionally re-issued) by staff, and
ended a grace period after the order's end.

A link is a token of 192 random bits (:func:`core.auth.new_tracking_token`); only its SHA-256
is stored. Every reader (tracking's snapshots and Track streams, dispatch's customer changes,
pod's GetProof) refuses a link that is revoked or past ``tracking_token_expires_at``.

Expiry: when an order is created, until its drop-off window ends plus
``tracking_token_grace_s``; a new window moves it likewise; once the order ends (delivered,
cancelled, returned) it is set to the end plus the grace, so a link never outlives its order
by more than the grace.
"""

from __future__ import annotations

import datetime as dt
import logging

from lastmile.dispatch.v1 import order_service_pb2

from core import topics
from core.auth import Principal, new_tracking_token, tracking_token_digest
from core.errors import InvalidArgument
from core.settings import Settings
from dispatch import order_store
from dispatch.context import DispatchContext
from dispatch.convert import now

log = logging.getLogger(__name__)


def ended_changes(settings: Settings) -> dict[str, object]:
    """The column change that ends the link ``tracking_token_grace_s`` after now (for a change
    that moves the order into a final status)."""
    return {
        "tracking_token_expires_at": now() + dt.timedelta(seconds=settings.tracking_token_grace_s)
    }


async def revoke_tracking_token(
    ctx: DispatchContext,
    principal: Principal,
    request: order_service_pb2.RevokeTrackingTokenRequest,
) -> order_service_pb2.RevokeTrackingTokenResponse:
    """RevokeTrackingToken: the link stops working at once; with ``issue_new`` a new one
    replaces it (returned only here). NOT_FOUND for an order of another tenant. Not an order
    event: the order itself does not change."""
    if not request.order_id:
        raise InvalidArgument("order_id is required")
    token = new_tracking_token() if request.issue_new else ""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        row = await order_store.fetch_order(conn, principal.tenant_id, request.order_id, lock=True)
        if token:
            # A new digest and the revoked flag cleared: the old link stays dead because its
            # digest no longer names any order.
            updated = await conn.fetchrow(
                "UPDATE orders SET tracking_token_digest = $2, tracking_token_revoked = false,"
                " updated_at = now() WHERE order_id = $1 RETURNING *",
                row["order_id"],
                tracking_token_digest(token),
            )
        else:
            updated = await conn.fetchrow(
                "UPDATE orders SET tracking_token_revoked = true, updated_at = now()"
                " WHERE order_id = $1 RETURNING *",
                row["order_id"],
            )
    assert updated is not None  # the row was locked above
    await _announce(ctx, updated["order_id"])
    return order_service_pb2.RevokeTrackingTokenResponse(
        order=order_store.order_message(updated), tracking_token=token
    )


async def _announce(ctx: DispatchContext, order_id: str) -> None:
    """Tell the tracking processes, so the link's open Track streams end now. Best effort:
    the link is dead already for every new request, and each process re-checks its streams'
    links every ``track_token_check_s`` anyway."""
    try:
        await ctx.bus.publish(topics.TRACKING_LINKS, order_id.encode())
    except Exception as exc:
        log.warning("link revocation not announced", extra={"order": order_id, "error": str(exc)})
