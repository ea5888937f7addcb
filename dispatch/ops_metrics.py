"""Backlog gauges for operators (docs/runbook.md), measured by the dispatch process every
``ops_metrics_interval_s``: the order outbox not yet relayed (rows, age of the oldest) and the
webhook deliveries by state (open, dead). Each query reads a partial index only."""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from core.workers import PollingWorker
from dispatch.context import DispatchContext

log = logging.getLogger(__name__)

OUTBOX_ROWS = Gauge(
    "lastmile_dispatch_outbox_backlog_rows", "Outbox rows written but not yet relayed to the bus."
)
OUTBOX_AGE = Gauge(
    "lastmile_dispatch_outbox_oldest_seconds", "Age of the oldest outbox row not yet relayed."
)
WEBHOOKS = Gauge(
    "lastmile_webhook_deliveries",
    "Webhook deliveries by state: open (pending or retrying) and dead (given up).",
    ["state"],
)
_OUTBOX = (
    "SELECT count(*) AS rows, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
    " FROM outbox WHERE published_at IS NULL"
)
# DeliveryState numbers: 1 pending, 3 retrying, 4 dead (migration 0006).
_OPEN = "SELECT count(*) FROM webhook_deliveries WHERE state IN (1, 3)"
_DEAD = "SELECT count(*) FROM webhook_deliveries WHERE state = 4"


class OpsMetrics(PollingWorker):
    """A dispatch worker that refreshes the gauges; see the module docstring."""

    name = "ops-metrics"

    def __init__(self, ctx: DispatchContext) -> None:
        super().__init__(ctx.settings.ops_metrics_interval_s)
        self._ctx = ctx

    async def start(self) -> None:
        """Measure once now (a scrape right after start sees real values), then keep at it."""
        try:
            await self.measure()
        except Exception as exc:  # the loop tries again; a gauge keeps its value meanwhile
            log.warning("ops metrics not measured", extra={"error": str(exc)})
        await super().start()

    async def round(self) -> bool:
        """One measurement."""
        await self.measure()
        return False

    async def measure(self) -> None:
        """Read the backlogs and set the gauges."""
        async with self._ctx.database.pool.acquire() as conn:
            outbox = await conn.fetchrow(_OUTBOX)
            open_deliveries = await conn.fetchval(_OPEN)
            dead = await conn.fetchval(_DEAD)
        assert outbox is not None
        OUTBOX_ROWS.set(int(outbox["rows"]))
        OUTBOX_AGE.set(float(outbox["age"]))
        WEBHOOKS.labels("open").set(int(open_deliveries or 0))
        WEBHOOKS.labels("dead").set(int(dead or 0))
