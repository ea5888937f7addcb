"""Which orders a driver is serving right now, cached in Redis for the per-batch observers.

The position fan-out and the ETA engine need, for every driver of a processed batch, the
orders whose customers may see that driver (status TO_PICKUP..NEARBY) and their remaining
stops. Asking PostgreSQL per batch would cost a query per batch per process; instead each
driver's list is cached in Redis (``lastmile:active-orders:{driver}``, JSON) for
``fanout_orders_ttl_s`` and dropped at once when an order event arrives for one of its orders
(:meth:`ActiveOrders.invalidate`), so a newly assigned order is visible within one event.
Misses of a whole batch are filled by one query.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lastmile.common.v1 import common_pb2

from core.bus import Bus, as_text
from core.db import Database
from core.geo import LatLng
from core.settings import Settings
from tracking.positions import PositionUpdate

#: Statuses in which the customer sees the driver: under way to them (pickup included).
VISIBLE = frozenset(
    {
        common_pb2.ORDER_STATUS_TO_PICKUP,
        common_pb2.ORDER_STATUS_AT_PICKUP,
        common_pb2.ORDER_STATUS_PICKED_UP,
        common_pb2.ORDER_STATUS_NEARBY,
    }
)
#: Statuses in which the pickup still lies ahead of the driver.
BEFORE_PICKUP = frozenset({common_pb2.ORDER_STATUS_TO_PICKUP, common_pb2.ORDER_STATUS_AT_PICKUP})


def cache_key(driver_id: str) -> str:
    """The cached active orders of one driver."""
    return f"lastmile:active-orders:{driver_id}"


def order_driver_key(order_id: str) -> str:
    """The driver whose cached list holds an order (to invalidate it on reassignment)."""
    return f"lastmile:active-orders:by-order:{order_id}"


@dataclass(frozen=True, slots=True)
class ActiveOrder:
    """One order a driver is serving, with what ETAs need of it."""

    order_id: str
    status: int
    pickup: LatLng
    drop_off: LatLng
    route_id: str
    #: The earliest pickup: the later of its origin's expected ready time and the pickup
    #: window's start; None when neither is known.
    ready_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain form for the cache."""
        return {
            "id": self.order_id,
            "s": self.status,
            "p": [self.pickup.lat, self.pickup.lng],
            "d": [self.drop_off.lat, self.drop_off.lng],
            "r": self.route_id,
            "ready": self.ready_at.timestamp() if self.ready_at else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ActiveOrder:
        """Back from the cache."""
        ready = raw.get("ready")
        return cls(
            raw["id"],
            int(raw["s"]),
            LatLng(*raw["p"]),
            LatLng(*raw["d"]),
            raw["r"],
            dt.datetime.fromtimestamp(ready, dt.UTC) if ready is not None else None,
        )


# greatest() skips NULLs: the ready time is whichever of the two is known, or the later.
_QUERY = (
    "SELECT o.order_id, o.driver_id, o.status, o.pickup_lat, o.pickup_lng, o.drop_off_lat,"
    " o.drop_off_lng, coalesce(o.route_id, '') AS route_id,"
    " greatest(oo.ready_at, o.pickup_start) AS ready_at"
    " FROM orders o LEFT JOIN origin_orders oo ON oo.order_id = o.order_id"
    " WHERE o.driver_id = ANY($1::text[]) AND o.status = ANY($2::smallint[])"
    " ORDER BY o.driver_id, o.created_at"
)


class ActiveOrders:
    """Reads and invalidates the cache; see the module docstring."""

    def __init__(self, settings: Settings, bus: Bus, database: Database) -> None:
        self._ttl_ms = max(1, int(settings.fanout_orders_ttl_s * 1000))
        self._bus = bus
        self._database = database
        # The answer for the last batch asked about (observers of one batch share it).
        self._last: tuple[Sequence[PositionUpdate], dict[str, list[ActiveOrder]]] | None = None

    async def of_batch(self, updates: Sequence[PositionUpdate]) -> dict[str, list[ActiveOrder]]:
        """:meth:`of_drivers` for the drivers of one processed batch, read once however many
        observers of that batch ask (the processor hands each the same sequence)."""
        if self._last is not None and self._last[0] is updates:
            return self._last[1]
        found = await self.of_drivers([u.driver_id for u in updates])
        self._last = (updates, found)
        return found

    async def of_drivers(self, driver_ids: Sequence[str]) -> dict[str, list[ActiveOrder]]:
        """Active orders of each driver (one Redis round trip, one query for the misses)."""
        if not driver_ids:
            return {}
        cached = await self._bus.redis.mget([cache_key(d) for d in driver_ids])
        found: dict[str, list[ActiveOrder]] = {}
        missing: list[str] = []
        for driver_id, raw in zip(driver_ids, cached, strict=True):
            if raw is None:
                missing.append(driver_id)
            else:
                found[driver_id] = [ActiveOrder.from_json(o) for o in json.loads(raw)]
        if missing:
            loaded = await self._load(missing)
            pipe = self._bus.redis.pipeline(transaction=False)
            for driver_id in missing:
                orders = loaded.get(driver_id, [])
                found[driver_id] = orders
                payload = json.dumps([o.to_json() for o in orders])
                pipe.set(cache_key(driver_id), payload, px=self._ttl_ms)
                for order in orders:
                    pipe.set(order_driver_key(order.order_id), driver_id, px=self._ttl_ms)
            await pipe.execute()
        return found

    async def _load(self, driver_ids: Sequence[str]) -> dict[str, list[ActiveOrder]]:
        async with self._database.pool.acquire() as conn:
            rows = await conn.fetch(_QUERY, list(driver_ids), sorted(VISIBLE))
        loaded: dict[str, list[ActiveOrder]] = {}
        for row in rows:
            loaded.setdefault(row["driver_id"], []).append(
                ActiveOrder(
                    order_id=row["order_id"],
                    status=int(row["status"]),
                    pickup=LatLng(row["pickup_lat"], row["pickup_lng"]),
                    drop_off=LatLng(row["drop_off_lat"], row["drop_off_lng"]),
                    route_id=row["route_id"],
                    ready_at=row["ready_at"],
                )
            )
        return loaded

    async def invalidate_orders(self, order_ids: Sequence[str]) -> None:
        """Forget the cached lists holding these orders: of the driver cached with each order
        (a reassigned order leaves its old driver at once) and of its driver now."""
        if not order_ids:
            return
        cached = await self._bus.redis.mget([order_driver_key(o) for o in order_ids])
        async with self._database.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT driver_id FROM orders WHERE order_id = ANY($1::text[])", list(order_ids)
            )
        drivers = {r["driver_id"] for r in rows} | {as_text(d) for d in cached if d}
        await self.invalidate(d for d in drivers if d)

    async def invalidate(self, driver_ids: Iterable[str]) -> None:
        """Forget the cached lists of these drivers (an order of theirs changed)."""
        keys = [cache_key(d) for d in set(driver_ids) if d]
        if keys:
            await self._bus.redis.delete(*keys)
