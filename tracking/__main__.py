"""``python -m tracking``: run the tracking process."""

from __future__ import annotations

from collections.abc import Sequence

from core.bus import Bus
from core.db import Database
from core.roads import RoadNetwork
from core.runtime import Component, main
from core.settings import Settings
from tracking.active_orders import ActiveOrders
from tracking.channel_hub import ChannelHub
from tracking.customer import CustomerTracking
from tracking.customer_snapshot import SnapshotBuilder
from tracking.driver_status import DriverStatusConsumer
from tracking.eta import EtaEngine
from tracking.fanout import PositionFanout
from tracking.fleet_api import FleetHandlers
from tracking.fleet_state import FleetStateHandlers
from tracking.link_checks import LinkChecks
from tracking.maintenance import Maintenance
from tracking.off_route import OffRouteObserver
from tracking.order_follow import OrderFollower
from tracking.processor import Processor
from tracking.service import components


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first so it stops last; the processor stops (flushing its batch) before it."""
    database, bus = Database(settings), Bus(settings)
    roads = RoadNetwork(settings.graph_path) if settings.snap_mode != "off" else None
    processor = Processor(settings, bus, database, roads)
    # Search needs the road network for isochrones even when snapping is off.
    fleet = FleetHandlers(settings, bus, database, roads or RoadNetwork(settings.graph_path))
    processor.add_observer(fleet.geofence_observer())
    # Customer tracking: fan-out and ETAs per batch, Track streams on one shared subscription.
    active = ActiveOrders(settings, bus, database)
    processor.add_publisher(PositionFanout(settings, bus, active))
    processor.add_observer(
        EtaEngine(settings, bus, database, roads or RoadNetwork(settings.graph_path), active)
    )
    # Driver guidance: positions against the pushed route's legs (dispatch recomputes).
    processor.add_observer(OffRouteObserver(settings, bus))
    hub = ChannelHub(bus, settings.track_queue_size)
    links = LinkChecks(settings, database, bus)
    customer = CustomerTracking(settings, SnapshotBuilder(settings, bus, database), hub, links)
    return [
        database,
        bus,
        Maintenance(settings, bus, database),
        processor,
        DriverStatusConsumer(settings, bus),
        fleet,
        OrderFollower(settings, bus, database, active),
        hub,
        links,
        *components(FleetStateHandlers(settings, bus, database, fleet.road_pool), fleet, customer),
    ]


if __name__ == "__main__":
    main("tracking", build)
