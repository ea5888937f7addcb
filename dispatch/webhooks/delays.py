"""The delay watcher (a component of the dispatch process): tells customers when their order
will arrive later than promised.

Source: ``eta_predictions``, the table tracking's ETA engine writes for every ETA it computes
(core/migrations/0004_eta.sql) — shared PostgreSQL, so dispatch imports nothing of tracking.
The watcher reads predictions after its cursor (``webhook_cursors``, locked ``FOR UPDATE SKIP
LOCKED`` so one replica reads at a time), takes the newest per order, and compares it with
the end of the order's drop-off window. Late by more than ``notify_delay_margin_s`` is delay
level 1, by more than two margins level 2, and so on; a level is notified only when it is
higher than every level already notified against the same window end, so a customer hears
once, and again only when the delay grew by another margin (or after a reschedule moved the
window). Predictions committed out of id order may be passed over; the next one of the order
(ETAs are refreshed every few seconds while the driver moves) is read instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.workers import PollingWorker
from dispatch import state_machine as sm
from dispatch.context import DispatchContext
from dispatch.webhooks import notifications, templates
from dispatch.webhooks.notifications import NotificationChannel

if TYPE_CHECKING:
    from core.db import Conn

log = logging.getLogger(__name__)
CURSOR = "eta-delays"
BATCH = 1000
#: Statuses in which an order is on its way to the customer (ETAs are computed for these).
ACTIVE = (sm.ASSIGNED, sm.TO_PICKUP, sm.AT_PICKUP, sm.PICKED_UP, sm.NEARBY)


def delay_level(lateness_s: float, margin_s: float) -> int:
    """0 when on time or late by at most one margin; else how many whole margins late."""
    if margin_s <= 0 or lateness_s <= margin_s:
        return 0
    return int(lateness_s // margin_s)


class DelayWatcher(PollingWorker):
    """See the module docstring."""

    name = "delay-watcher"

    def __init__(self, ctx: DispatchContext, channel: NotificationChannel) -> None:
        super().__init__(ctx.settings.webhook_poll_interval_s)
        self._ctx = ctx
        self._channel = channel
        self._zone = notifications.zone_of(ctx.settings.notify_timezone)

    async def round(self) -> bool:
        """Check one batch of predictions."""
        return await self.check_once() >= BATCH

    async def check_once(self) -> int:
        """Read predictions after the cursor, notify delays, move the cursor; returns how many
        predictions were read."""
        async with self._ctx.database.pool.acquire() as conn, conn.transaction():
            # Created at the newest prediction: ETAs from before the watcher ran are stale.
            await conn.execute(
                "INSERT INTO webhook_cursors (name, position) SELECT $1,"
                " coalesce(max(prediction_id), 0) FROM eta_predictions ON CONFLICT DO NOTHING",
                CURSOR,
            )
            position = await conn.fetchval(
                "SELECT position FROM webhook_cursors WHERE name = $1 FOR UPDATE SKIP LOCKED",
                CURSOR,
            )
            if position is None:
                return 0  # another replica is reading
            rows = await conn.fetch(
                "SELECT prediction_id, order_id, predicted_arrival FROM eta_predictions"
                " WHERE prediction_id > $1 ORDER BY prediction_id LIMIT $2",
                position,
                BATCH,
            )
            if not rows:
                return 0
            newest: dict[str, dt.datetime] = {r["order_id"]: r["predicted_arrival"] for r in rows}
            notified = [await self._check(conn, order_id, eta) for order_id, eta in newest.items()]
            await conn.execute(
                "UPDATE webhook_cursors SET position = $2 WHERE name = $1",
                CURSOR,
                rows[-1]["prediction_id"],
            )
        if any(notified):
            self._ctx.webhook_wakeup.set()  # committed: the sender can take the deliveries
        return len(rows)

    async def _check(self, conn: Conn, order_id: str, eta: dt.datetime) -> bool:
        """Notify the order's delay when it reached a new level; returns whether it did."""
        order = await conn.fetchrow(
            "SELECT * FROM orders WHERE order_id = $1 AND status = ANY($2::smallint[])",
            order_id,
            list(ACTIVE),
        )
        if order is None or order["drop_off_end"] is None:
            return False
        end: dt.datetime = order["drop_off_end"]
        level = delay_level((eta - end).total_seconds(), self._ctx.settings.notify_delay_margin_s)
        if level == 0:
            return False
        scope = end.isoformat()
        notified = await conn.fetchval(
            "SELECT coalesce(max(sequence), 0) FROM customer_notifications"
            " WHERE order_id = $1 AND trigger = $2 AND scope = $3",
            order_id,
            templates.DELAYED,
            scope,
        )
        if level <= notified:
            return False
        return await self._notify(conn, order, level, scope, eta)

    async def _notify(
        self, conn: Conn, order: Mapping[str, Any], level: int, scope: str, eta: dt.datetime
    ) -> bool:
        now = dt.datetime.now(dt.UTC)
        note = notifications.build(
            order, templates.DELAYED, level, now, self._zone, scope=scope, eta=eta
        )
        sent = await notifications.notify(conn, self._channel, note)
        if sent:
            log.info("customer told of a delay", extra={"order_id": note.order_id, "level": level})
        return sent
