"""Lookups coalesced into batches: one fetch for a burst, every caller answered."""

from __future__ import annotations

import asyncio

import pytest

from core.batching import BatchLoader


class _Source:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[list[str]] = []
        self._fail_on = fail_on

    async def fetch(self, keys: list[str]) -> dict[str, str]:
        self.calls.append(keys)
        await asyncio.sleep(0.01)  # a round trip: later callers gather meanwhile
        if self._fail_on in keys:
            raise RuntimeError("database went away")
        return {key: key.upper() for key in keys if key != "missing"}


def test_a_burst_is_one_fetch_and_every_caller_gets_its_value() -> None:
    source = _Source()

    async def burst() -> list[str | None]:
        loader = BatchLoader(source.fetch, max_batch=100)
        return await asyncio.gather(*(loader.load(k) for k in ("a", "b", "a", "missing")))

    assert asyncio.run(burst()) == ["A", "B", "A", None]
    assert source.calls == [["a", "b", "missing"]]  # a key asked twice is fetched once


def test_keys_arriving_during_a_fetch_go_in_the_next_batch_bounded_in_size() -> None:
    source = _Source()

    async def waves() -> list[str | None]:
        loader = BatchLoader(source.fetch, max_batch=2)
        first = asyncio.gather(*(loader.load(k) for k in ("a", "b", "c")))
        await asyncio.sleep(0.001)  # the first fetch is under way
        second = asyncio.gather(loader.load("d"), loader.load("e"))
        return [*await first, *await second]

    assert asyncio.run(waves()) == ["A", "B", "C", "D", "E"]
    assert source.calls == [["a", "b"], ["c", "d"], ["e"]]


def test_a_failed_fetch_fails_only_its_own_callers() -> None:
    source = _Source(fail_on="bad")

    async def mixed() -> tuple[BaseException | str | None, ...]:
        loader = BatchLoader(source.fetch, max_batch=2)
        return tuple(
            await asyncio.gather(
                *(loader.load(k) for k in ("bad", "x", "y")), return_exceptions=True
            )
        )

    failed_bad, failed_x, fine = asyncio.run(mixed())
    assert isinstance(failed_bad, RuntimeError) and isinstance(failed_x, RuntimeError)
    assert fine == "Y"


def test_a_caller_that_left_does_not_break_the_batch() -> None:
    source = _Source()

    async def one_leaves() -> str | None:
        loader = BatchLoader(source.fetch, max_batch=10)
        leaving = asyncio.create_task(loader.load("a"))
        staying = asyncio.create_task(loader.load("b"))
        await asyncio.sleep(0.001)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return await staying

    assert asyncio.run(one_leaves()) == "B"
