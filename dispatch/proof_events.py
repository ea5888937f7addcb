"""Proof events applied to orders: a confirmed proof of delivery (``topics.PROOF_EVENTS``,
written by pod to the outbox with the proof record, relayed here) delivers its order.

Idempotent: the event's proof id is the dedupe key, and an order already DELIVERED (or no
longer PICKED_UP/NEARBY, e.g. failed meanwhile) is skipped, so replays change nothing.
"""

from __future__ import annotations

from lastmile.pod.v1 import pod_pb2

from dispatch import progress
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.order_store import Actor

#: Statuses a proof may deliver from (the parcel is with the driver, at or near the door).
DELIVERABLE = frozenset({sm.PICKED_UP, sm.NEARBY})


async def apply_proof_event(ctx: DispatchContext, payload: bytes) -> bool:
    """Move the proof's order to DELIVERED; returns whether it changed. ``payload`` is the
    ``data`` field of a PROOF_EVENTS entry (a serialized lastmile.pod.v1.Proof)."""
    proof = pod_pb2.Proof.FromString(payload)
    details = {
        "proof_id": proof.proof_id,
        "proof_kind": pod_pb2.ProofKind.Name(proof.kind),
        "record_hash": proof.record_hash,
        "flagged": proof.flagged,
        "attempt": proof.attempt,
    }
    return await progress.advance(
        ctx,
        proof.order_id,
        sm.DELIVERED,
        Actor(f"driver:{proof.driver_id}"),
        only_from=DELIVERABLE,
        driver_id=proof.driver_id,
        dedupe=f"proof:{proof.proof_id}",
        details=details,
    )
