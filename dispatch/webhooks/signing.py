"""The ``X-Lastmile-Signature`` header of webhook requests (pure).

``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``: the timestamp is signed with
the body, so a captured request cannot be replayed later than the receiver's tolerance.
Receivers verify with :func:`verify` (or the few lines in docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Lastmile-Signature"
EVENT_HEADER = "X-Lastmile-Event"
DELIVERY_HEADER = "X-Lastmile-Delivery"
#: How far a signature's timestamp may be from the receiver's clock by default (s).
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the webhook's secret."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: ``t=<timestamp>,v1=<signature>``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of
    ``now`` (constant-time comparison; any of several ``v1`` values may match)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
