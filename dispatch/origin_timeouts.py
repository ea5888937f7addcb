"""The answer policy for silent origins: a worker of the dispatch process that, every
``origin_sweep_interval_s``, answers each PENDING decision past its ``answer_due_at`` as
``origin_answer_policy`` says: ``auto_accept`` (the origin's default preparation) or
``reject`` (rerouted to a fallback or cancelled, as a rejection by the origin would be).

Safe with several dispatch replicas: each due order is answered in its own transaction that
takes the order row with ``FOR UPDATE SKIP LOCKED`` (a replica or a handler working on it
makes the others skip it) and checks again that the decision is still PENDING and due.
"""

from __future__ import annotations

import logging

from core.settings import Settings
from core.workers import PollingWorker
from dispatch import origin_reroute
from dispatch.context import DispatchContext
from dispatch.order_store import SYSTEM
from dispatch.origin_orders import BEFORE_PICKUP, Locked, accept_locked
from dispatch.origin_rules import PENDING

log = logging.getLogger(__name__)
POLICIES = ("auto_accept", "reject")
# Most due decisions one sweep answers (the rest wait for the next sweep).
SWEEP_BATCH = 100


def answer_policy(settings: Settings) -> str:
    """The configured policy; ValueError for an unknown one (the process refuses to start)."""
    policy = settings.origin_answer_policy
    if policy not in POLICIES:
        raise ValueError(
            f"LASTMILE_ORIGIN_ANSWER_POLICY must be one of {', '.join(POLICIES)}, got {policy!r}"
        )
    return policy


class OriginAnswerWorker(PollingWorker):
    """Background component: one sweep per round (see the module docstring)."""

    name = "origin-answers"

    def __init__(self, ctx: DispatchContext) -> None:
        super().__init__(ctx.settings.origin_sweep_interval_s)
        self._ctx = ctx
        self._policy = answer_policy(ctx.settings)

    async def round(self) -> bool:
        """Answer the due decisions; more may be due when a full batch was answered."""
        return await sweep(self._ctx, self._policy) >= SWEEP_BATCH


async def sweep(ctx: DispatchContext, policy: str) -> int:
    """Answer every due decision; returns how many were answered."""
    async with ctx.database.pool.acquire() as conn:
        due = await conn.fetch(
            "SELECT order_id FROM origin_orders WHERE decision = $1 AND answer_due_at <= now()"
            " ORDER BY answer_due_at LIMIT $2",
            PENDING,
            SWEEP_BATCH,
        )
    answered = 0
    for row in due:
        answered += await answer(ctx, row["order_id"], policy)
    if answered:
        ctx.wake_outbox()
    return answered


async def answer(ctx: DispatchContext, order_id: str, policy: str) -> int:
    """Answer one due decision for its silent origin; 0 when someone else did (or is doing)
    it, or nobody needs an answer any more (the order moved on)."""
    withdrawn_from = ""
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        order = await conn.fetchrow(
            "SELECT * FROM orders WHERE order_id = $1 FOR UPDATE SKIP LOCKED", order_id
        )
        if order is None:
            return 0
        decision = await conn.fetchrow(
            "SELECT *, answer_due_at <= now() AS due FROM origin_orders WHERE order_id = $1"
            " FOR UPDATE",
            order_id,
        )
        if decision is None or decision["decision"] != PENDING or not decision["due"]:
            return 0
        if order["status"] not in BEFORE_PICKUP:  # cancelled or moved on: nothing to answer
            await conn.execute(
                "UPDATE origin_orders SET answer_due_at = NULL WHERE order_id = $1", order_id
            )
            return 0
        locked = Locked(dict(order), dict(decision), SYSTEM)
        if policy == "auto_accept":
            await accept_locked(conn, locked, None, "answer_policy")
        else:
            reason = f"no answer within {ctx.settings.origin_answer_timeout_s:g} s"
            withdrawn_from = await origin_reroute.reject_locked(
                ctx, conn, locked, reason, "answer_policy"
            )
    await origin_reroute.tell_driver(ctx, withdrawn_from, order_id)
    log.info("origin answered by policy", extra={"order": order_id, "policy": policy})
    return 1
