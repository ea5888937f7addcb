"""The shared consumer-group reader (core.stream_consumer) on a real Redis: entries handled in
order and acked; a refusal acked; an outage stops the round and the rest is taken again in
order; a failed entry stays pending and is taken again at the next start; a dead consumer's
entries are claimed once idle."""

from __future__ import annotations

from typing import Any

import pytest

from core.bus import Bus, StreamEntry
from core.errors import FailedPrecondition
from core.stream_consumer import GroupConsumer
from tests.helpers import async_wait_until

pytestmark = pytest.mark.integration
STREAM, GROUP = "test:consumer-events", "test-group"
CLAIM_IDLE_MS = 300


@pytest.fixture
def bus(private_bus: Bus) -> Bus:
    return private_bus


class _Recorder(GroupConsumer):
    """Notes each entry's ``n``; ``fail`` maps an ``n`` to what to raise the first time."""

    def __init__(self, bus: Bus, consumer: str, fail: dict[str, Exception]) -> None:
        super().__init__(
            bus, [STREAM], GROUP, consumer, block_ms=50, claim_idle_ms=CLAIM_IDLE_MS, retry_s=0.05
        )
        self.seen: list[str] = []
        self._fail = dict(fail)

    async def handle(self, entry: StreamEntry) -> None:
        n = entry.fields[b"n"].decode()
        self.seen.append(n)
        if n in self._fail:
            raise self._fail.pop(n)


async def _append(bus: Bus, *ns: str) -> None:
    for n in ns:
        await bus.append(STREAM, {"n": n})


async def _pending(bus: Bus) -> int:
    summary: Any = await bus.redis.xpending(STREAM, GROUP)
    return int(summary["pending"])


async def _run_until_seen(consumer: _Recorder, count: int) -> None:
    await consumer.start()
    try:

        async def enough() -> bool:
            return len(consumer.seen) >= count

        await async_wait_until(enough, within=10, what=f"{count} entries handled")
    finally:
        await consumer.stop()


async def test_refusals_are_acked_and_an_outage_retakes_the_rest_in_order(bus: Bus) -> None:
    await _append(bus, "1", "2", "3", "4")
    consumer = _Recorder(
        bus,
        "c1",
        {"2": FailedPrecondition("not now"), "3": ConnectionError("Redis went away")},
    )

    await _run_until_seen(consumer, 5)

    assert consumer.seen == ["1", "2", "3", "3", "4"]
    assert await _pending(bus) == 0


async def test_a_failed_entry_stays_pending_and_is_taken_at_the_next_start(bus: Bus) -> None:
    await _append(bus, "1", "2", "3")
    first = _Recorder(bus, "c1", {"2": ValueError("a bug")})
    await _run_until_seen(first, 3)
    assert first.seen == ["1", "2", "3"]
    assert await _pending(bus) == 1

    again = _Recorder(bus, "c1", {})  # the same consumer after a restart
    await _run_until_seen(again, 1)

    assert again.seen == ["2"]
    assert await _pending(bus) == 0


async def test_a_dead_consumers_entries_are_claimed_once_idle(bus: Bus) -> None:
    await bus.ensure_group(STREAM, GROUP, "0")
    await _append(bus, "1", "2")
    # A consumer that read both and died before acking them.
    await bus.read_group([STREAM], GROUP, "dead", count=10, block_ms=10)
    survivor = _Recorder(bus, "c2", {})

    await _run_until_seen(survivor, 2)

    assert survivor.seen == ["1", "2"]
    assert await _pending(bus) == 0
