"""The order state machine: which status may follow which, and nothing else (pure).

Statuses are ``lastmile.common.v1.OrderStatus`` numbers. Every status change of an order goes
through :func:`check_transition`; an illegal one raises ``FailedPrecondition`` naming both
statuses, which the interceptor turns into FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections import deque

from lastmile.common.v1 import common_pb2

from core.errors import FailedPrecondition

PENDING = common_pb2.ORDER_STATUS_PENDING
OFFERED = common_pb2.ORDER_STATUS_OFFERED
ASSIGNED = common_pb2.ORDER_STATUS_ASSIGNED
TO_PICKUP = common_pb2.ORDER_STATUS_TO_PICKUP
AT_PICKUP = common_pb2.ORDER_STATUS_AT_PICKUP
PICKED_UP = common_pb2.ORDER_STATUS_PICKED_UP
NEARBY = common_pb2.ORDER_STATUS_NEARBY
DELIVERED = common_pb2.ORDER_STATUS_DELIVERED
FAILED = common_pb2.ORDER_STATUS_FAILED
RESCHEDULED = common_pb2.ORDER_STATUS_RESCHEDULED
RETURNED = common_pb2.ORDER_STATUS_RETURNED
CANCELLED = common_pb2.ORDER_STATUS_CANCELLED

#: Every allowed transition. Anything not listed (self-transitions included) is refused.
TRANSITIONS: dict[int, frozenset[int]] = {
    # Waiting for a driver: offered to one (instant), assigned (planned), moved, cancelled.
    PENDING: frozenset({OFFERED, ASSIGNED, RESCHEDULED, CANCELLED}),
    # Offer declined or expired -> back to PENDING; accepted -> ASSIGNED.
    OFFERED: frozenset({PENDING, ASSIGNED, RESCHEDULED, CANCELLED}),
    # Unassigned again (reassignment) -> PENDING.
    ASSIGNED: frozenset({PENDING, TO_PICKUP, RESCHEDULED, CANCELLED}),
    TO_PICKUP: frozenset({PENDING, AT_PICKUP, RESCHEDULED, CANCELLED}),
    AT_PICKUP: frozenset({PICKED_UP, RESCHEDULED, CANCELLED}),
    # From here the parcel is with the driver: no cancelling, no rescheduling by customers.
    PICKED_UP: frozenset({NEARBY, DELIVERED, FAILED}),
    NEARBY: frozenset({DELIVERED, FAILED}),
    # Failure policies: reattempt in the same wave (driver still holds it), reschedule to the
    # next window, or return to the origin.
    FAILED: frozenset({PICKED_UP, RESCHEDULED, RETURNED}),
    # A new window: planned again (or assigned directly), or given up.
    RESCHEDULED: frozenset({PENDING, OFFERED, ASSIGNED, RETURNED, CANCELLED}),
    DELIVERED: frozenset(),
    RETURNED: frozenset(),
    CANCELLED: frozenset(),
}

#: Statuses nothing follows.
FINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: Statuses from which an order may still be cancelled (before pickup).
CANCELLABLE = frozenset(s for s, nxt in TRANSITIONS.items() if CANCELLED in nxt)
#: Statuses in which the parcel is with the driver (too late for a customer reschedule).
CARRIED = frozenset({PICKED_UP, NEARBY, FAILED})
#: The forward progress of a delivery, used to walk through skipped steps (an external
#: provider reporting "picked up" of an order we only knew as assigned).
PROGRESS = (PENDING, ASSIGNED, TO_PICKUP, AT_PICKUP, PICKED_UP, NEARBY, DELIVERED)


def name(status: int) -> str:
    """``PICKED_UP`` for ORDER_STATUS_PICKED_UP; the number when unknown."""
    try:
        return common_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")
    except ValueError:
        return str(status)


def allowed(current: int, target: int) -> bool:
    """Whether ``current`` -> ``target`` is a legal transition."""
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: int, target: int) -> None:
    """Refuse an illegal transition with FailedPrecondition naming both statuses."""
    if not allowed(current, target):
        raise FailedPrecondition(
            f"order cannot go from {name(current)} to {name(target)}"
            + (" (final status)" if current in FINAL else "")
        )


def forward_path(current: int, target: int) -> list[int] | None:
    """The shortest chain of legal transitions from ``current`` to ``target`` along the
    delivery's forward progress (excluding ``current``); ``[]`` when already there, None when
    ``target`` is not ahead (an old or replayed report, which callers skip)."""
    if current == target:
        return []
    queue: deque[tuple[int, list[int]]] = deque([(current, [])])
    seen = {current}
    while queue:
        status, path = queue.popleft()
        for nxt in sorted(TRANSITIONS.get(status, frozenset())):
            if nxt in seen or nxt not in PROGRESS or not _ahead(status, nxt):
                continue
            if nxt == target:
                return [*path, nxt]
            seen.add(nxt)
            queue.append((nxt, [*path, nxt]))
    return None


def _ahead(status: int, nxt: int) -> bool:
    if status not in PROGRESS:
        return True  # from FAILED back into progress (reattempt) counts as ahead
    return PROGRESS.index(nxt) > PROGRESS.index(status)
