"""How many Connect streams one driver holds in this gateway process.

A driver app that lost its network often reconnects before the server has noticed the old
connection is dead (keepalive takes tens of seconds). Refusing the new stream would lock the
driver out until then, so the newest stream wins: beyond ``gateway_max_streams_per_driver``
the oldest stream of that driver ends with ABORTED ("replaced by a newer connection"), and
commands go to the streams that remain. The count is per process: two gateways behind a
load balancer could each hold one stream of the same driver (their sequence numbers still
serialize in Redis, so nothing is stored twice).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter

from core.errors import Aborted

REPLACED = Counter(
    "lastmile_gateway_streams_replaced_total",
    "Connect streams ended because a newer stream of the same driver took their place.",
)
End = Callable[[BaseException], None]


class StreamRegistry:
    """Open streams per driver, oldest first; see the module docstring."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("gateway_max_streams_per_driver must be >= 1")
        self._limit = limit
        self._open: dict[str, list[End]] = {}

    def end_all(self, reason: BaseException) -> int:
        """End every open stream with ``reason`` (a draining server); returns how many."""
        ends = [end for streams in self._open.values() for end in streams]
        self._open.clear()
        for end in ends:
            end(reason)
        return len(ends)

    def count(self, driver_id: str) -> int:
        """Streams the driver holds now."""
        return len(self._open.get(driver_id, ()))

    def open(self, driver_id: str, end: End) -> Callable[[], None]:
        """Register a new stream (ending the oldest ones beyond the limit with ``end``);
        returns the function that unregisters it."""
        streams = self._open.setdefault(driver_id, [])
        while len(streams) >= self._limit:
            oldest = streams.pop(0)
            REPLACED.inc()
            oldest(Aborted("replaced by a newer connection of the same driver"))
        streams.append(end)

        def close() -> None:
            current = self._open.get(driver_id)
            if current is None:
                return
            if end in current:
                current.remove(end)
            if not current:
                del self._open[driver_id]

        return close
