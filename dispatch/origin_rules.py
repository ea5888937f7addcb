"""The origin rules (pure): where a rejected order goes, which preparation times are accepted,
and which fallback lists are valid.

A rejection (by the origin, or by the reject answer policy for a silent one) reroutes the
order to the first of the rejecting origin's ``fallback_origin_ids`` that exists in the
tenant, is not closed and has not rejected this order before; when none is left, the order
ends (CANCELLED, reason ``origin_rejected``). Every outcome carries a human-readable
explanation of these steps for the order's history.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from lastmile.origin.v1 import origin_pb2

from core.errors import InvalidArgument
from core.inputs import client_seconds

PENDING = origin_pb2.ORIGIN_DECISION_PENDING
ACCEPTED = origin_pb2.ORIGIN_DECISION_ACCEPTED
REJECTED = origin_pb2.ORIGIN_DECISION_REJECTED
READY = origin_pb2.ORIGIN_DECISION_READY
#: Decisions after which an order may be dispatched to drivers.
DISPATCHABLE = frozenset({ACCEPTED, READY})
MAX_FALLBACKS = 10
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Reroute:
    """The outcome of a rejection: the origin the order goes to ("" = it ends), and why."""

    origin_id: str
    explanation: str


def reroute(
    rejecting: str,
    fallbacks: Sequence[str],
    closed: Mapping[str, bool],
    rejected_by: Collection[str],
) -> Reroute:
    """Where an order rejected by ``rejecting`` goes (see the module docstring).

    ``closed``: the tenant's origins among ``fallbacks`` and whether each is closed (an id
    missing from it is unknown); ``rejected_by``: origins that rejected this order already.
    """
    steps = [f"origin {rejecting} rejected"]
    for candidate in fallbacks:
        if candidate == rejecting or candidate in rejected_by:
            steps.append(f"fallback {candidate} rejected it already")
        elif candidate not in closed:
            steps.append(f"fallback {candidate} unknown")
        elif closed[candidate]:
            steps.append(f"fallback {candidate} closed")
        else:
            steps.append(f"rerouted to fallback {candidate}")
            return Reroute(candidate, "; ".join(steps))
    steps.append("no fallback left: cancelled (origin_rejected)")
    return Reroute("", "; ".join(steps))


def preparation_s(duration: Duration, max_s: float, field: str = "preparation") -> int:
    """Whole seconds of a preparation time a client sent; INVALID_ARGUMENT when negative,
    malformed or longer than ``max_s``."""
    seconds = client_seconds(duration, field)
    if seconds < 0:
        raise InvalidArgument(f"{field} must not be negative, got {seconds:g} s")
    if seconds > max_s:
        raise InvalidArgument(f"{field} must be at most {max_s:g} s, got {seconds:g} s")
    return math.ceil(seconds)


def check_reason(reason: str) -> str:
    """A rejection's reason, stripped; INVALID_ARGUMENT when empty or too long."""
    text = reason.strip()
    if not text:
        raise InvalidArgument("reason is required")
    if len(text) > MAX_REASON:
        raise InvalidArgument(f"reason is longer than {MAX_REASON} chars")
    return text


def check_fallbacks(origin_id: str, fallbacks: Sequence[str]) -> list[str]:
    """An origin's fallback list; INVALID_ARGUMENT for itself, duplicates, empty ids or more
    than :data:`MAX_FALLBACKS`."""
    if len(fallbacks) > MAX_FALLBACKS:
        raise InvalidArgument(f"origin.fallback_origin_ids holds at most {MAX_FALLBACKS} ids")
    if any(not f for f in fallbacks):
        raise InvalidArgument("origin.fallback_origin_ids must not hold empty ids")
    if origin_id in fallbacks:
        raise InvalidArgument("an origin cannot be its own fallback")
    if len(set(fallbacks)) != len(fallbacks):
        raise InvalidArgument("origin.fallback_origin_ids holds an id twice")
    return list(fallbacks)
