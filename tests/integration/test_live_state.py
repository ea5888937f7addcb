"""Live state on a real Redis: a round's drivers are written in script calls of
``DRIVERS_PER_CALL`` drivers each, every driver gets its own answer in order, and a fix older
than the stored one changes nothing; nor does a status or stop change older than the stored
one."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from lastmile.common.v1 import common_pb2

from core.geo import LatLng
from ops.servers import RedisServer
from tests.integration.orders_support import own_redis_db
from tracking.live_state import DRIVERS_PER_CALL, GEO_KEY, LiveState, state_key
from tracking.positions import Fix

pytestmark = pytest.mark.integration
START = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
async def client(redis_server: RedisServer, redis_db: int) -> AsyncIterator[aioredis.Redis]:
    """A client of an emptied private database."""
    redis = aioredis.Redis.from_url(own_redis_db(redis_server.url, redis_db))
    await redis.flushdb()
    try:
        yield redis
    finally:
        await redis.aclose()


def _fix(k: int, seconds: int, snapped: bool = True) -> Fix:
    raw = LatLng(35.85 + k * 1e-4, 14.45 + k * 1e-4)
    return Fix(
        driver_id=f"drv-live-{k}",
        at=START + dt.timedelta(seconds=seconds),
        position=raw,
        accuracy_m=5.0,
        speed_mps=8.0,
        heading_deg=90.0,
        received_at=START,
        snapped=LatLng(raw.lat + 1e-5, raw.lng) if snapped else None,
        tenant_id="t1",
    )


async def test_a_round_larger_than_one_call_answers_every_driver_in_order(
    client: aioredis.Redis,
) -> None:
    drivers = 2 * DRIVERS_PER_CALL + 7
    live = LiveState(client)
    changed_ms = int(START.timestamp() * 1000)
    await live.change(
        "drv-live-5", "t1", "status_at", changed_ms, {"status": common_pb2.DRIVER_STATUS_DELIVERING}
    )

    states = await live.advance([_fix(k, 10, snapped=k % 2 == 0) for k in range(drivers)])

    assert [s.driver_id if s else None for s in states] == [f"drv-live-{k}" for k in range(drivers)]
    assert await client.zcard(GEO_KEY) == drivers
    shown = states[4]
    assert shown is not None and shown.position.lat == pytest.approx(35.85 + 4e-4 + 1e-5)
    raw = states[3]
    assert raw is not None and raw.position.lat == pytest.approx(35.85 + 3e-4)
    assert [s.status for s in states[4:7] if s] == [
        common_pb2.DRIVER_STATUS_IDLE,
        common_pb2.DRIVER_STATUS_DELIVERING,  # a status already stored stays
        common_pb2.DRIVER_STATUS_IDLE,
    ]
    assert states[5] is not None and states[5].status_since.ToMilliseconds() == changed_ms
    assert states[4] is not None and not states[4].HasField("status_since")
    last = await client.hgetall(state_key(f"drv-live-{drivers - 1}"))
    assert (
        last[b"tenant"] == b"t1"
        and last[b"position_at"]
        == str(int((START + dt.timedelta(seconds=10)).timestamp() * 1000)).encode()
    )


async def test_an_older_fix_changes_nothing_and_the_others_still_advance(
    client: aioredis.Redis,
) -> None:
    live = LiveState(client)
    await live.advance([_fix(k, 20) for k in range(DRIVERS_PER_CALL + 1)])
    before = await client.hgetall(state_key("drv-live-1"))

    # One call: driver 1's fix is older than the stored one, the others' are newer.
    states = await live.advance([_fix(0, 30), _fix(1, 15), _fix(DRIVERS_PER_CALL, 25)])

    assert [s is not None for s in states] == [True, False, True]
    assert await client.hgetall(state_key("drv-live-1")) == before


async def test_a_change_older_than_the_stored_one_is_not_applied(client: aioredis.Redis) -> None:
    live = LiveState(client)
    at = int(START.timestamp() * 1000)
    on_break, idle = common_pb2.DRIVER_STATUS_ON_BREAK, common_pb2.DRIVER_STATUS_IDLE

    first = await live.change("drv-live-c", "t1", "status_at", at, {"status": on_break})
    older = await live.change("drv-live-c", "t2", "status_at", at - 1, {"status": idle})
    stop = await live.change("drv-live-c", "", "stop_at", at - 5, {"current_stop_id": "s1"})

    assert first == {"status": str(on_break), "status_at": str(at), "tenant": "t1"}
    assert older is None
    # Stops keep their own time: an earlier stop event still applies after a status change.
    assert stop == {**first, "current_stop_id": "s1", "stop_at": str(at - 5)}
    assert await client.hget(state_key("drv-live-c"), "status") == str(on_break).encode()
