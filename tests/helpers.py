"""Small helpers shared by the tests: polling instead of sleeping, enum numbers outside the
contracts."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from core.geo import M_PER_DEG_LAT, LatLng

POLL_INTERVAL_S = 0.05
# Bytes no message parses from: field 1, length-delimited, 5 bytes long, but only 2 follow.
NOT_A_MESSAGE = b"\x0a\x05ab"


class WaitTimeout(AssertionError):
    """The condition polled by :func:`wait_until` did not hold in time."""


def wait_until[T](
    predicate: Callable[[], T],
    timeout: float,
    interval: float = POLL_INTERVAL_S,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Exceptions from ``predicate`` count as "not yet" (connection refused while a server
    boots); the last one is reported when time runs out. An ``AssertionError`` is final and
    raised at once: a predicate uses ``assert`` to say waiting longer cannot help.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"{what} not met after {timeout:.1f}s{detail}")
        time.sleep(interval)


async def async_wait_until[T](
    predicate: Callable[[], Awaitable[T]],
    within: float,
    interval: float = POLL_INTERVAL_S,
    what: str = "condition",
) -> T:
    """:func:`wait_until` for a coroutine predicate, polling for ``within`` seconds without
    blocking the event loop."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"{what} not met after {within:.1f}s{detail}")
        await asyncio.sleep(interval)


async def subscriber_count(redis: Redis, channel: str) -> int:
    """How many connections are subscribed to ``channel`` (pub/sub is server-wide)."""
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


async def wait_for_subscriber(redis: Redis, channel: str, before: int, within: float = 10) -> None:
    """Wait until ``channel`` has more subscribers than ``before``: a message published
    earlier would reach nobody, and a fixed sleep is too short on a busy machine."""

    async def more() -> bool:
        return await subscriber_count(redis, channel) > before

    await async_wait_until(more, within=within, what=f"a new subscriber on {channel}")


def undefined_enum(number: int) -> Any:
    """``number`` as the value of an enum field that does not define it: protobuf accepts and
    sends it (open enums), the typed constructors do not let it through without this."""
    return number


def east_of(where: LatLng, metres: float) -> LatLng:
    """The point ``metres`` east of ``where`` (west when negative)."""
    return LatLng(
        where.lat, where.lng + metres / (M_PER_DEG_LAT * math.cos(math.radians(where.lat)))
    )
