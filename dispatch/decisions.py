"""The dispatch decisions counter: what dispatch decided, by kind and result, for operators
(docs/runbook.md). One line at each decision site: ``record("offer", "accepted")``.

Kinds and their results:

- ``split``: the fleet a new order went to (``internal``, ``external``);
- ``offer``: ``made``, ``offer_accepted``, ``offer_declined``, ``offer_expired``;
- ``assign`` (manual): ``assigned``, ``reassigned``;
- ``wave``: ``assigned`` and ``unassigned`` (counted per order);
- ``failure_policy``: ``reattempt``, ``reschedule``, ``return_to_origin``.
"""

from __future__ import annotations

from lastmile.dispatch.v1 import dispatch_pb2
from prometheus_client import Counter

DECISIONS = Counter(
    "lastmile_dispatch_decisions_total",
    "Dispatch decisions, by kind (split, offer, assign, wave, failure_policy) and result.",
    ["kind", "result"],
)


def record(kind: str, result: str, count: int = 1) -> None:
    """Count ``count`` decisions of ``kind`` with ``result`` (nothing for ``count`` 0)."""
    if count > 0:
        DECISIONS.labels(kind, result.lower()).inc(count)


def fleet_name(fleet: int) -> str:
    """``internal`` for FLEET_KIND_INTERNAL: the result label of a split decision."""
    try:
        return dispatch_pb2.FleetKind.Name(fleet).removeprefix("FLEET_KIND_")
    except ValueError:
        return str(fleet)
