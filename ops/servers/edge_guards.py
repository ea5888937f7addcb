"""What the Envoy edge guards (docs/security.md), as pieces of its config: the CORS allow-list
and the request body limit of each route (the buffer filter). Used by
:func:`ops.servers.envoy.render_envoy_config`.

Bidirectional streams (the driver gateway's ``Connect``, reflection) are never buffered: a
buffer waits for the end of the request, which such a stream only sends when it closes. The
services' gRPC message size limit bounds their messages instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_TYPES = "type.googleapis.com/envoy.extensions"
BUFFER_FILTER = "envoy.filters.http.buffer"
# Route prefixes whose requests are bidirectional streams.
STREAMING_PREFIXES = ("/lastmile.driver.v1.", "/grpc.reflection.")
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_WEB_MAX_REQUEST_BYTES = 64 * 1024
# The edge's own origin on a laptop (the browser apps are served same-origin by the edge).
LOCAL_ORIGINS = ("http://127.0.0.1:8080", "http://localhost:8080")


def check_origins(allowed_origins: Sequence[str]) -> list[str]:
    """The CORS allow-list, checked: explicit ``scheme://host[:port]`` origins, never "*"."""
    origins = [o.strip() for o in allowed_origins if o.strip()]
    if not origins:
        raise ValueError("allowed_origins must name at least one origin")
    for origin in origins:
        if origin == "*" or "://" not in origin or origin.endswith("/"):
            raise ValueError(
                f"allowed origin {origin!r} must be an explicit scheme://host[:port], not '*'"
            )
    return origins


def buffer_limit(max_bytes: int | None) -> dict[str, Any]:
    """A route's ``typed_per_filter_config``: its body limit, or no buffering (None)."""
    per_route: dict[str, Any] = {"@type": f"{_TYPES}.filters.http.buffer.v3.BufferPerRoute"}
    if max_bytes is None:
        per_route["disabled"] = True
    else:
        per_route["buffer"] = {"max_request_bytes": max_bytes}
    return {BUFFER_FILTER: per_route}


def buffer_filter(max_bytes: int) -> dict[str, Any]:
    """The listener's buffer filter with its default limit (every route sets its own)."""
    return {
        "name": BUFFER_FILTER,
        "typed_config": {
            "@type": f"{_TYPES}.filters.http.buffer.v3.Buffer",
            "max_request_bytes": max_bytes,
        },
    }
