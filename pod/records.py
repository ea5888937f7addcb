"""Proof records: the tamper-evident hash, its verification, and rows to messages.

The record hash, so an auditor can recompute it from a Proof and the object's bytes:

``record_hash = hex(SHA-256(canonical_json(metadata) || 0x0A || object_bytes))``

where ``object_bytes`` is empty for contactless-QR proofs, and ``canonical_json`` is the JSON
object below with keys sorted, no whitespace (``","`` and ``":"`` separators), ASCII only
(non-ASCII escaped as ``\\uXXXX``), encoded as ASCII::

    {"attempt": int, "captured_at": TIME, "checks": [{"detail": str, "name": str,
     "passed": bool}, ...] (in the proof's order), "confirmed_at": TIME, "driver_id": str,
     "flagged": bool, "kind": "PHOTO" | "SIGNATURE" | "CONTACTLESS_QR", "lat": COORD,
     "lng": COORD, "object_key": str, "order_id": str, "proof_id": str, "sha256": str,
     "signer_name": str, "v": 1}

TIME is UTC with exactly six fraction digits, ``2024-05-01T12:00:00.250000Z``; COORD is the
decimal degrees as a string with exactly seven fraction digits, ``"35.8997000"``. Times carry
microseconds at most (Python's and PostgreSQL's precision), so a stored record verifies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2

from pod.checks import Check

RECORD_VERSION = 1


def kind_name(kind: int) -> str:
    """``PHOTO`` for PROOF_KIND_PHOTO."""
    return pod_pb2.ProofKind.Name(kind).removeprefix("PROOF_KIND_")


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_metadata(proof: pod_pb2.Proof) -> bytes:
    """The canonical JSON of a proof's metadata (see the module docstring)."""
    metadata: dict[str, Any] = {
        "v": RECORD_VERSION,
        "proof_id": proof.proof_id,
        "order_id": proof.order_id,
        "driver_id": proof.driver_id,
        "attempt": proof.attempt,
        "kind": kind_name(proof.kind),
        "object_key": proof.object_key,
        "sha256": proof.sha256,
        "captured_at": _time(proof.captured_at.ToDatetime(tzinfo=dt.UTC)),
        "lat": f"{proof.position.lat:.7f}",
        "lng": f"{proof.position.lng:.7f}",
        "signer_name": proof.signer_name,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in proof.checks],
        "flagged": proof.flagged,
        "confirmed_at": _time(proof.confirmed_at.ToDatetime(tzinfo=dt.UTC)),
    }
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def record_hash(proof: pod_pb2.Proof, data: bytes) -> str:
    """The tamper-evident hash over the metadata and the object bytes."""
    digest = hashlib.sha256(canonical_metadata(proof))
    digest.update(b"\n")
    digest.update(data)
    return digest.hexdigest()


def verify_record(proof: pod_pb2.Proof, data: bytes) -> bool:
    """Whether ``proof`` and the object bytes ``data`` are what was recorded: the object's
    SHA-256 and the record hash both match (use ``b""`` for contactless-QR proofs)."""
    object_ok = not proof.object_key or hashlib.sha256(data).hexdigest() == proof.sha256
    return object_ok and record_hash(proof, data) == proof.record_hash


def timestamp(value: dt.datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def checks_json(checks: Sequence[Check]) -> str:
    """The ``proofs.checks`` column value (order kept: it is part of the record hash)."""
    return json.dumps([{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks])


def proof_message(row: Mapping[str, Any]) -> pod_pb2.Proof:
    """The Proof of a ``proofs`` row."""
    raw = row["checks"]
    checks = json.loads(raw) if isinstance(raw, str) else raw
    return pod_pb2.Proof(
        proof_id=row["proof_id"],
        order_id=row["order_id"],
        driver_id=row["driver_id"],
        kind=row["kind"],
        object_key=row["object_key"],
        sha256=row["sha256"],
        captured_at=timestamp(row["captured_at"]),
        position=common_pb2.LatLng(lat=row["lat"], lng=row["lng"]),
        signer_name=row["signer_name"],
        checks=[
            pod_pb2.ProofCheck(name=c["name"], passed=c["passed"], detail=c["detail"])
            for c in checks
        ],
        flagged=row["flagged"],
        record_hash=row["record_hash"],
        confirmed_at=timestamp(row["confirmed_at"]),
        attempt=row["attempt"],
    )
