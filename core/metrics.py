"""Prometheus metrics shared by every service; each process serves them on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_STARTED = Counter("lastmile_rpc_started_total", "RPCs started.", ["service", "method"])
RPC_HANDLED = Counter(
    "lastmile_rpc_handled_total", "RPCs finished, by status code.", ["service", "method", "code"]
)
RPC_SECONDS = Histogram(
    "lastmile_rpc_duration_seconds",
    "Time to finish a unary RPC (streams: time until the stream ended).",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
STREAMS_OPEN = Gauge("lastmile_streams_open", "Streaming RPCs open now.", ["service", "method"])
WEBHOOK_ATTEMPTS = Counter(
    "lastmile_webhook_attempts_total",
    "Webhook delivery attempts, by result (delivered, retrying, dead, failed_late).",
    ["result"],
)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics over HTTP (port 0 disables it)."""
    if port:
        start_http_server(port, addr=host)


SHED = Counter(
    "lastmile_rpc_shed_total",
    "Unary RPCs refused with RESOURCE_EXHAUSTED because the server had too many in flight.",
    ["service", "method"],
)
LIMITED = Counter(
    "lastmile_rate_limited_total",
    "Requests or stream events refused by a per-identity limit, by limit.",
    ["limit"],
)
