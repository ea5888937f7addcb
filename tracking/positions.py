"""What the processor hands to whoever reacts to driver positions (geofences, ETAs, fan-out).

The processor calls every registered :class:`PositionObserver` once per processed batch with
the newest position of each driver in it, after live state and history are written. An
observer plugs in without touching the processor's loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.geo import LatLng


@dataclass(frozen=True, slots=True)
class Fix:
    """One validated GPS fix of a driver, as read from the ping stream."""

    driver_id: str
    at: dt.datetime
    position: LatLng
    accuracy_m: float
    speed_mps: float
    heading_deg: float
    received_at: dt.datetime
    snapped: LatLng | None = None
    #: The driver token's tenant, stamped by the gateway ('' for entries without one).
    tenant_id: str = ""


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    """A driver's newest position after a batch, with its live status."""

    driver_id: str
    at: dt.datetime
    position: LatLng
    snapped: LatLng | None
    speed_mps: float
    heading_deg: float
    status: int
    current_order_id: str
    current_stop_id: str
    #: Every fix of this driver in the batch, oldest first (dwell and path logic want them).
    fixes: tuple[Fix, ...]
    #: The driver's tenant ('' when unknown: no tenant's fences or fleet views see it).
    tenant_id: str = ""

    @property
    def shown(self) -> LatLng:
        """The position to show people: on the road when snapping succeeded."""
        return self.snapped or self.position


class PositionObserver(Protocol):
    """Reacts to new driver positions; must not block the loop for long."""

    async def on_positions(self, updates: Sequence[PositionUpdate]) -> None:
        """Called once per processed batch with the drivers whose live position advanced."""
        ...
