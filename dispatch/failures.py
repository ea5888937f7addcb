"""Failed delivery attempts: record the failure with its evidence, then apply the reason's
policy from settings (reattempt in the same wave, reschedule to the next window, return to
origin); after ``max_delivery_attempts`` the order returns whatever the reason. Each step is
an event in the order's history, and the relay tells the customer's tracking stream."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2

from core.errors import InvalidArgument
from core.inputs import check_position
from core.settings import Settings
from dispatch import decisions, order_store, route_versions
from dispatch import state_machine as sm
from dispatch.changes import reschedule_row
from dispatch.context import DispatchContext
from dispatch.convert import now
from dispatch.order_store import Actor, Row
from dispatch.progress import already_recorded
from dispatch.tracking_links import ended_changes

REATTEMPT = order_service_pb2.FAILURE_POLICY_REATTEMPT
RESCHEDULE = order_service_pb2.FAILURE_POLICY_RESCHEDULE
RETURN_TO_ORIGIN = order_service_pb2.FAILURE_POLICY_RETURN_TO_ORIGIN


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reported failed attempt and its evidence."""

    order_id: str
    reason: int
    note: str = ""
    photo_key: str = ""
    lat: float | None = None
    lng: float | None = None
    #: Set for reports from the bus: a replayed report with the same key is skipped.
    dedupe: str = ""
    #: When the driver's app recorded the attempt (RFC 3339), if it said.
    reported_at: str = ""


def policies(settings: Settings) -> dict[int, int]:
    """FailureReason -> FailurePolicy from ``settings.failure_policies``
    (``NOT_HOME=REATTEMPT,...``); reasons not named return to origin."""
    found: dict[int, int] = {}
    for item in filter(None, (p.strip() for p in settings.failure_policies.split(","))):
        reason, _, policy = item.partition("=")
        found[common_pb2.FailureReason.Value("FAILURE_REASON_" + reason.strip())] = (
            order_service_pb2.FailurePolicy.Value("FAILURE_POLICY_" + policy.strip())
        )
    return found


def policy_for(settings: Settings, reason: int, attempt: int) -> tuple[int, str]:
    """The policy for this failure and why."""
    if attempt >= settings.max_delivery_attempts:
        return RETURN_TO_ORIGIN, f"attempt {attempt} of {settings.max_delivery_attempts}"
    policy = policies(settings).get(reason, RETURN_TO_ORIGIN)
    return policy, f"policy for {common_pb2.FailureReason.Name(reason)}"


def check_attempt(attempt: Attempt) -> None:
    """INVALID_ARGUMENT for a missing or unknown reason or a position off the globe (it is
    stored as evidence), before the order's state is looked at."""
    known = set(common_pb2.FailureReason.values()) - {common_pb2.FAILURE_REASON_UNSPECIFIED}
    if attempt.reason not in known:
        raise InvalidArgument(
            "reason must be one of NOT_HOME, WRONG_ADDRESS, ACCESS_PROBLEM, REFUSED, DAMAGED"
        )
    if attempt.lat is not None and attempt.lng is not None:
        check_position(attempt.lat, attempt.lng, "position")


async def report_failed_attempt(
    ctx: DispatchContext, tenant_id: str | None, attempt: Attempt, actor: Actor
) -> tuple[dispatch_pb2.Order, int]:
    """Record the failure and apply its policy in one transaction; returns the order and the
    policy applied. ``tenant_id`` None: any tenant (the driver-event consumer)."""
    check_attempt(attempt)
    async with ctx.database.pool.acquire() as conn, conn.transaction():
        if tenant_id is None:
            found = await order_store.fetch_order_any_tenant(conn, attempt.order_id, lock=True)
            if found is None:
                raise InvalidArgument(f"order {attempt.order_id!r} not found")
            row: Row = found
        else:
            row = await order_store.fetch_order(conn, tenant_id, attempt.order_id, lock=True)
        if attempt.dedupe and await already_recorded(conn, attempt.order_id, attempt.dedupe):
            return order_store.order_message(row), order_service_pb2.FAILURE_POLICY_UNSPECIFIED
        row, _ = await order_store.apply_change(
            conn,
            row,
            "attempt_failed",
            actor,
            sm.FAILED,
            changes={"last_failure_reason": attempt.reason},
            details=_evidence(attempt, row["attempt"]),
        )
        policy, why = policy_for(ctx.settings, attempt.reason, row["attempt"])
        row = await _apply_policy(ctx, conn, row, policy, why)
        changed = await route_versions.after_failure(ctx, conn, row)
    ctx.wake_outbox()
    await route_versions.push_current(ctx, changed, "failed_attempt")
    return order_store.order_message(row), policy


def _evidence(attempt: Attempt, number: int) -> dict[str, Any]:
    details: dict[str, Any] = {
        "attempt": number,
        "reason": common_pb2.FailureReason.Name(attempt.reason),
        "failure_reason": attempt.reason,
        "note": attempt.note,
        "photo_key": attempt.photo_key,
    }
    if attempt.dedupe:
        details["dedupe"] = attempt.dedupe
    if attempt.lat is not None and attempt.lng is not None:
        details["position"] = [attempt.lat, attempt.lng]
    if attempt.reported_at:
        details["reported_at"] = attempt.reported_at
    return details


async def _apply_policy(ctx: DispatchContext, conn: Any, row: Row, policy: int, why: str) -> Row:
    name = order_service_pb2.FailurePolicy.Name(policy).removeprefix("FAILURE_POLICY_")
    decisions.record("failure_policy", name)
    details: Mapping[str, Any] = {"policy": name, "why": why}
    if policy == REATTEMPT:
        row, _ = await order_store.apply_change(
            conn,
            row,
            "reattempt",
            order_store.SYSTEM,
            sm.PICKED_UP,
            changes={"attempt": row["attempt"] + 1},
            details=details,
        )
        return row
    if policy == RESCHEDULE:
        start, end = next_window(ctx.settings, row)
        row, _ = await reschedule_row(
            ctx,
            conn,
            row,
            order_store.SYSTEM,
            start,
            end,
            "rescheduled_after_failure",
            {**details},
            {"attempt": row["attempt"] + 1},
        )
        return row
    row, _ = await order_store.apply_change(
        conn,
        row,
        "returned_to_origin",
        order_store.SYSTEM,
        sm.RETURNED,
        changes=ended_changes(ctx.settings),
        details=details,
    )
    return row


def next_window(settings: Settings, row: Row) -> tuple[dt.datetime, dt.datetime]:
    """The next window: the current one moved by ``failed_reschedule_shift_s`` (until it is
    in the future), or a new one that far from now when the order had none."""
    shift = dt.timedelta(seconds=max(1, settings.failed_reschedule_shift_s))
    start, end = row["drop_off_start"], row["drop_off_end"]
    if start is None or end is None:
        start = now() + shift
        return start, start + dt.timedelta(seconds=settings.failed_reschedule_window_s)
    start, end = start + shift, end + shift
    while end <= now():
        start, end = start + shift, end + shift
    return start, end
