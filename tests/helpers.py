"""Small helpers shared by the tests: polling instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.05


class WaitTimeout(AssertionError):
    """The condition polled by :func:`wait_until` did not hold in time."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = POLL_INTERVAL_S,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Exceptions from ``predicate`` count as "not yet"; the last one is reported when time
    runs out.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"{what} not met after {timeout:.1f}s{detail}")
        time.sleep(interval)
