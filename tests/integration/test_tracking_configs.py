"""The gateway's tenants' tracking intervals (gateway/tracking_configs.py) on real PostgreSQL and
Redis: announced changes, missed announcements, and PostgreSQL being away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from lastmile.driver.v1 import driver_pb2

from core import topics
from core.bus import Bus
from core.db import Database
from core.settings import Settings
from core.tracking_intervals import IntervalStore, Overrides
from gateway.tracking_configs import TrackingConfigs
from ops.servers import PostgresServer
from tests.helpers import subscriber_count, wait_for_subscriber

pytestmark = pytest.mark.integration
PASSIVE = driver_pb2.TRACKING_MODE_PASSIVE
WAIT_S = 10.0


@pytest.fixture
def settings(private_settings: Settings, postgres_server: PostgresServer) -> Settings:
    return private_settings.replace(database_url=postgres_server.dsn)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    await database.start()
    try:
        yield database
    finally:
        await database.stop()


async def _configs(settings: Settings, bus: Bus, database: Database) -> TrackingConfigs:
    configs = TrackingConfigs(settings, bus, database)
    await configs.start()
    return configs


async def _called(called: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(called.wait(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"the watcher was not called: {what}")


def _recorder() -> tuple[asyncio.Event, Callable[[], None]]:
    called = asyncio.Event()
    return called, called.set


def _tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def test_an_announced_change_is_read_at_once(
    settings: Settings, private_bus: Bus, database: Database
) -> None:
    # Rounds far apart: only the announcement can explain a quick change.
    listeners = await subscriber_count(private_bus.redis, topics.TRACKING_INTERVALS)
    configs = await _configs(
        settings.replace(tracking_intervals_refresh_s=600.0), private_bus, database
    )
    tenant = _tenant()
    try:
        before = await configs.config(tenant, PASSIVE)
        assert before.capture_interval.ToSeconds() == settings.passive_capture_interval_s
        calls, watcher = _recorder()
        configs.watch(tenant, watcher)
        await IntervalStore(database).save(tenant, Overrides(passive_capture_s=90.0))
        await wait_for_subscriber(private_bus.redis, topics.TRACKING_INTERVALS, listeners)
        await private_bus.publish(topics.TRACKING_INTERVALS, tenant.encode())
        await _called(calls, "after the announcement")
        after = await configs.config(tenant, PASSIVE)
        assert after.capture_interval.ToSeconds() == 90
        assert after.upload_interval.ToSeconds() == settings.passive_upload_interval_s
    finally:
        await configs.stop()


async def test_a_missed_announcement_is_caught_up_by_the_next_round(
    settings: Settings, private_bus: Bus, database: Database
) -> None:
    configs = await _configs(
        settings.replace(tracking_intervals_refresh_s=0.2), private_bus, database
    )
    tenant, other = _tenant(), _tenant()
    try:
        await configs.config(tenant, PASSIVE)
        await configs.config(other, PASSIVE)
        calls, watcher = _recorder()
        others, other_watcher = _recorder()
        configs.watch(tenant, watcher)
        configs.watch(other, other_watcher)
        await IntervalStore(database).save(tenant, Overrides(passive_upload_s=600.0))
        await _called(calls, "by a round, with no announcement")
        assert (await configs.config(tenant, PASSIVE)).upload_interval.ToSeconds() == 600
        assert not others.is_set(), "a tenant whose intervals did not change was told they did"
    finally:
        await configs.stop()


async def test_defaults_while_postgres_is_away_then_the_real_ones(
    settings: Settings, private_bus: Bus, database: Database
) -> None:
    tenant = _tenant()
    await IntervalStore(database).save(tenant, Overrides(passive_capture_s=120.0))
    configs = await _configs(
        settings.replace(tracking_intervals_refresh_s=0.2), private_bus, database
    )
    try:
        await database.stop()  # the pool is gone: every read fails
        meanwhile = await configs.config(tenant, PASSIVE)
        assert meanwhile.capture_interval.ToSeconds() == settings.passive_capture_interval_s
        calls, watcher = _recorder()
        configs.watch(tenant, watcher)
        await database.start()
        await _called(calls, "once PostgreSQL is back")
        assert (await configs.config(tenant, PASSIVE)).capture_interval.ToSeconds() == 120
    finally:
        await configs.stop()
