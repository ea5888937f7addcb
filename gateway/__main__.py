"""``python -m gateway``: run the driver gateway process."""

from __future__ import annotations

from collections.abc import Sequence

from core.bus import Bus
from core.db import Database
from core.runtime import Component, main
from core.settings import Settings
from gateway.commands import CommandRouter
from gateway.ingest import Enqueuer
from gateway.service import GatewayComponent
from gateway.tracking_configs import TrackingConfigs


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first (PostgreSQL for the ownership checks of order events and the tenants'
    tracking intervals, Redis for the ingest queue), then the enqueuer, command router and
    tracking configs, then the servicer."""
    database, bus = Database(settings), Bus(settings)
    enqueuer = Enqueuer(bus, settings)
    router = CommandRouter(bus)
    configs = TrackingConfigs(settings, bus, database)
    gateway = GatewayComponent(settings, enqueuer, router, database, configs)
    return [database, bus, enqueuer, router, configs, gateway]


if __name__ == "__main__":
    main("gateway", build)
