"""Driver status and stop changes on a real Redis, through the consumer that applies them:
the newest change wins whatever order the events are applied in, the status carries when it
changed, and a change is on the tenant's fleet channel at once, not with the next position."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2
from prometheus_client import REGISTRY

from core import topics
from core.bus import Bus
from core.geo import LatLng
from core.live_state_keys import driver_key
from core.settings import Settings
from tests.helpers import async_wait_until, subscriber_count, wait_for_subscriber
from tracking.driver_status import DriverStatusConsumer
from tracking.live_state import LiveState
from tracking.positions import Fix

pytestmark = pytest.mark.integration
DRIVER, TENANT = "drv-status", "t-status"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ON_BREAK, IDLE = common_pb2.DRIVER_STATUS_ON_BREAK, common_pb2.DRIVER_STATUS_IDLE


@pytest.fixture
def settings(private_settings: Settings) -> Settings:
    return private_settings


@pytest.fixture
def bus(private_bus: Bus) -> Bus:
    return private_bus


def _stamp(at: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


async def _send(bus: Bus, event: driver_service_pb2.ConnectRequest) -> str:
    """Append a driver event as the gateway does; returns its entry id."""
    fields = {"driver": DRIVER, "tenant": TENANT, "seq": "1", "data": event.SerializeToString()}
    return await bus.append(topics.DRIVER_EVENTS, fields)


def _status(status: int, at: dt.datetime | None) -> driver_service_pb2.ConnectRequest:
    change = driver_pb2.StatusChange(status=status)  # type: ignore[arg-type]
    if at is not None:
        change.at.CopyFrom(_stamp(at))
    return driver_service_pb2.ConnectRequest(seq=1, status=change)


def _stale(kind: str) -> float:
    labels = {"kind": kind}
    return REGISTRY.get_sample_value("lastmile_tracking_stale_driver_changes_total", labels) or 0


async def _fleet_updates(bus: Bus, count: int) -> list[tracking_pb2.DriverState]:
    """The next ``count`` driver states on the tenant's fleet channel."""
    seen: list[tracking_pb2.DriverState] = []
    async with asyncio.timeout(10):
        async for _, payload in bus.subscribe(topics.fleet_channel(TENANT)):
            seen += fleet_service_pb2.WatchFleetResponse.FromString(payload).drivers
            if len(seen) >= count:
                return seen
    return seen


async def test_the_newest_change_wins_and_reaches_the_fleet_at_once(
    settings: Settings, bus: Bus
) -> None:
    live = LiveState(bus.redis)
    position = LatLng(35.9, 14.5)
    fix = Fix(
        driver_id=DRIVER,
        at=NOW - dt.timedelta(minutes=1),
        position=position,
        accuracy_m=5.0,
        speed_mps=0.0,
        heading_deg=0.0,
        received_at=NOW,
        tenant_id=TENANT,
    )
    await live.advance([fix])
    consumer = DriverStatusConsumer(settings, bus)
    stale_before = _stale("status")
    channel = topics.fleet_channel(TENANT)
    watchers = await subscriber_count(bus.redis, channel)
    listening = asyncio.create_task(_fleet_updates(bus, 2))
    await wait_for_subscriber(bus.redis, channel, watchers)
    await consumer.start()
    try:
        await _send(bus, _status(ON_BREAK, NOW - dt.timedelta(seconds=5)))
        # Applied after the break but made before it (another process was slower): dropped.
        await _send(bus, _status(IDLE, NOW - dt.timedelta(seconds=9)))
        stop = driver_pb2.StopEvent(order_id="o1", stop_id="s1", kind=1)  # type: ignore[arg-type]
        await _send(bus, driver_service_pb2.ConnectRequest(seq=2, stop=stop))
        on_break, at_stop = await listening
        back = await _send(bus, _status(IDLE, None))  # no time from the app: the gateway's
        [idle] = await _fleet_updates(bus, 1)
    finally:
        await consumer.stop()

    assert (on_break.status, on_break.status_since.ToDatetime(dt.UTC)) == (
        ON_BREAK,
        NOW - dt.timedelta(seconds=5),
    )
    assert on_break.position.lat == pytest.approx(35.9)
    assert (at_stop.status, at_stop.current_order_id, at_stop.current_stop_id) == (
        ON_BREAK,
        "o1",
        "s1",
    )
    assert _stale("status") - stale_before == 1
    assert idle.status == IDLE and idle.status_since.ToMilliseconds() == int(back.split("-")[0])
    stored = await live.get(DRIVER)
    assert stored is not None and stored.status == IDLE


async def test_a_driver_without_a_position_is_not_published(settings: Settings, bus: Bus) -> None:
    consumer = DriverStatusConsumer(settings, bus)
    pubsub: Any = bus.redis.pubsub()
    await pubsub.subscribe(topics.fleet_channel(TENANT))
    await consumer.start()
    try:
        await _send(bus, _status(ON_BREAK, NOW))

        async def applied() -> bool:
            return await bus.redis.hget(driver_key(DRIVER), "status") is not None

        await async_wait_until(applied, within=10, what="the status applied")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    finally:
        await consumer.stop()
        await pubsub.aclose()
    assert message is None
