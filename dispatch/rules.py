"""The provider rules engine (pure): which fleet or external provider carries an order.

An area's rules are grouped by priority (lower first). Within the first group that applies
to the order's kind, the order's bucket — SHA-256 of its id, modulo 100, so the same order
always lands in the same place — is matched against the rules' cumulative shares. A chosen
external provider that is disabled (or refused the order) gives way to its fallback provider,
then to the next priority group, then to the internal fleet. Every decision carries a
human-readable explanation of these steps (auditable: why this provider).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from lastmile.dispatch.v1 import dispatch_pb2

from core.errors import InvalidArgument
from core.inputs import check_enum

INTERNAL = dispatch_pb2.FLEET_KIND_INTERNAL
EXTERNAL = dispatch_pb2.FLEET_KIND_EXTERNAL
ANY_KIND = dispatch_pb2.ORDER_KIND_UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Rule:
    """One provider rule of an area (mirrors lastmile.dispatch.v1.ProviderRule)."""

    priority: int
    fleet: int
    provider_id: str
    share_percent: int
    order_kind: int = ANY_KIND
    fallback_provider_id: str = ""

    def label(self) -> str:
        """``internal`` or ``provider <id>``."""
        return "internal" if self.fleet == INTERNAL else f"provider {self.provider_id}"


@dataclass(frozen=True, slots=True)
class Split:
    """Where an order goes and why."""

    fleet: int
    provider_id: str
    area_id: str
    explanation: str


def bucket(order_id: str) -> int:
    """The order's stable bucket, 0..99."""
    return int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:8], "big") % 100


def validate_rules(rules: Sequence[Rule]) -> None:
    """INVALID_ARGUMENT unless every rule is well-formed and the shares of each
    (priority, order kind) group add up to 100."""
    totals: dict[tuple[int, int], int] = {}
    for i, rule in enumerate(rules):
        where = f"rules[{i}]"
        if rule.fleet not in (INTERNAL, EXTERNAL):
            raise InvalidArgument(f"{where}.fleet must be INTERNAL or EXTERNAL")
        if rule.fleet == EXTERNAL and not rule.provider_id:
            raise InvalidArgument(f"{where}: an EXTERNAL rule needs a provider_id")
        if rule.fleet == INTERNAL and rule.provider_id:
            raise InvalidArgument(f"{where}: an INTERNAL rule takes no provider_id")
        if not 0 <= rule.share_percent <= 100:
            raise InvalidArgument(f"{where}.share_percent must be within 0..100")
        check_enum(rule.order_kind, dispatch_pb2.OrderKind.DESCRIPTOR, f"{where}.order_kind", True)
        key = (rule.priority, rule.order_kind)
        totals[key] = totals.get(key, 0) + rule.share_percent
    for (priority, kind), total in sorted(totals.items()):
        if total != 100:
            raise InvalidArgument(
                f"shares of priority {priority} ({_kind(kind)}) add up to {total}, not 100"
            )


def split(
    order_id: str,
    order_kind: int,
    area_id: str,
    rules: Sequence[Rule],
    available: Collection[str],
) -> Split:
    """Decide the fleet or provider of an order (see the module docstring).

    ``available``: ids of the external providers that are enabled and have not refused this
    order.
    """
    if not area_id:
        return Split(INTERNAL, "", "", "no area contains the pickup: internal fleet (default)")
    b = bucket(order_id)
    steps = [f"area {area_id}: bucket {b} (sha256 of order id mod 100)"]
    for priority, group in _groups(rules, order_kind):
        chosen = _by_share(group, b)
        steps.append(f"priority {priority} shares {_shares(group)} -> {chosen.label()}")
        if chosen.fleet == INTERNAL:
            return Split(INTERNAL, "", area_id, "; ".join(steps))
        if chosen.provider_id in available:
            return Split(EXTERNAL, chosen.provider_id, area_id, "; ".join(steps))
        steps.append(f"provider {chosen.provider_id} unavailable")
        fallback = chosen.fallback_provider_id
        if fallback and fallback in available:
            steps.append(f"fallback -> provider {fallback}")
            return Split(EXTERNAL, fallback, area_id, "; ".join(steps))
        if fallback:
            steps.append(f"fallback provider {fallback} unavailable")
    steps.append("no rule left: internal fleet")
    return Split(INTERNAL, "", area_id, "; ".join(steps))


def _groups(rules: Sequence[Rule], order_kind: int) -> list[tuple[int, list[Rule]]]:
    """Applicable groups by priority; at one priority a group for the order's own kind wins
    over the group for all kinds."""
    found: list[tuple[int, list[Rule]]] = []
    for priority in sorted({r.priority for r in rules}):
        at = [r for r in rules if r.priority == priority]
        own = [r for r in at if r.order_kind == order_kind and order_kind != ANY_KIND]
        generic = [r for r in at if r.order_kind == ANY_KIND]
        group = own or generic
        if group:
            found.append((priority, group))
    return found


def _by_share(group: Sequence[Rule], b: int) -> Rule:
    upper = 0
    for rule in group:
        upper += rule.share_percent
        if b < upper:
            return rule
    return group[-1]  # shares are validated to add up to 100; kept total for safety


def _shares(group: Sequence[Rule]) -> str:
    parts, low = [], 0
    for rule in group:
        if rule.share_percent:
            parts.append(f"{rule.label()} {low}-{low + rule.share_percent - 1}")
        low += rule.share_percent
    return "[" + ", ".join(parts) + "]"


def _kind(kind: int) -> str:
    return "all kinds" if kind == ANY_KIND else dispatch_pb2.OrderKind.Name(kind)
