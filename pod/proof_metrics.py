"""Proof-check metrics for operators (docs/runbook.md): every check's outcome, and what became
of each proof (accepted, flagged for review, rejected)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from pod.checks import Check, Verdict

CHECKS = Counter(
    "lastmile_pod_proof_checks_total",
    "Proof checks run on confirmation, by check and result (passed, failed).",
    ["check", "result"],
)
VERDICTS = Counter(
    "lastmile_pod_proofs_total",
    "Proof confirmations by outcome (accepted, flagged, rejected).",
    ["outcome"],
)


def observe(checks: Sequence[Check], verdict: Verdict) -> None:
    """Count the checks of one confirmation and its outcome."""
    for check in checks:
        CHECKS.labels(check.name, "passed" if check.passed else "failed").inc()
    outcome = "rejected" if verdict.rejected else "flagged" if verdict.flagged else "accepted"
    VERDICTS.labels(outcome).inc()
