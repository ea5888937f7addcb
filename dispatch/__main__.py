"""``python -m dispatch``: run the dispatch process."""

from __future__ import annotations

from collections.abc import Sequence

from core.bus import Bus
from core.db import Database
from core.runtime import Component, main
from core.settings import Settings
from dispatch.context import DispatchContext
from dispatch.driver_events import DriverEventConsumer
from dispatch.instant import InstantDispatcher
from dispatch.ops_metrics import OpsMetrics
from dispatch.origin_timeouts import OriginAnswerWorker
from dispatch.outbox import OutboxRelay
from dispatch.providers.worker import ProviderWorker
from dispatch.service import components
from dispatch.wave_scheduler import WaveScheduler
from dispatch.webhooks.delays import DelayWatcher
from dispatch.webhooks.fan_in import WebhookFanIn
from dispatch.webhooks.notifications import WebhookChannel
from dispatch.webhooks.sender import WebhookSender


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first so it stops last; the workers after the servicers so they stop first."""
    ctx = DispatchContext(settings, Database(settings), Bus(settings))
    workers: list[Component] = [
        OutboxRelay(ctx),
        DriverEventConsumer(ctx),
        ProviderWorker(ctx),
        InstantDispatcher(ctx),
        WaveScheduler(ctx),
        OriginAnswerWorker(ctx),
        WebhookFanIn(ctx, WebhookChannel()),
        DelayWatcher(ctx, WebhookChannel()),
        WebhookSender(ctx),
        OpsMetrics(ctx),
    ]
    return [ctx.database, ctx.bus, *components(ctx), *workers]


if __name__ == "__main__":
    main("dispatch", build)
