"""In-process limits: token buckets per identity, concurrent-stream slots per identity, and an
in-flight gate for load shedding.

Scope: one process. A driver or tracking link served by two processes gets two budgets; that
is the documented trade-off (docs/security.md) for limits that cost no network round trip on
the hot path. Memory is bounded: each keyed structure remembers at most ``max_keys``
identities and forgets the least recently seen first (a forgotten bucket starts full again,
which only ever errs towards letting a request through).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import ResourceExhausted

Clock = Callable[[], float]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each request takes one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        """Take one token if there is one (refilling for the time passed first)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class KeyedRateLimiter:
    """One token bucket per identity (driver id, tracking-link digest, ...)."""

    def __init__(
        self, rate_per_s: float, burst: int, max_keys: int, clock: Clock = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_keys >= 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Whether ``key`` may make one more request now (and count it if so)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def check(self, key: str, what: str) -> None:
        """``allow`` or ResourceExhausted naming ``what`` was limited."""
        if not self.allow(key):
            raise ResourceExhausted(
                f"{what}: more than {self._rate:g} requests/s (burst {self._burst:g}); retry later"
            )


class StreamSlots:
    """At most ``limit`` open streams per identity, counted while they are open."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._open: dict[str, int] = {}

    def count(self, key: str) -> int:
        """Streams ``key`` holds now."""
        return self._open.get(key, 0)

    @contextmanager
    def hold(self, key: str, what: str) -> Iterator[None]:
        """Occupy one slot for the ``with`` block; ResourceExhausted when all are taken."""
        if self.count(key) >= self.limit:
            raise ResourceExhausted(f"{what}: at most {self.limit} open streams; close one first")
        self._open[key] = self.count(key) + 1
        try:
            yield
        finally:
            left = self.count(key) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)


class InflightGate:
    """Load shedding: at most ``limit`` calls inside at once; the rest are refused at once
    (a queue would only turn overload into timeouts)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.inside = 0

    def enter(self) -> bool:
        """Take a place if one is free."""
        if self.inside >= self.limit:
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        """Give the place back."""
        self.inside = max(0, self.inside - 1)
