"""Helpers of the customer tracking tests: a customer's Track stream read in a thread, order
set-up through OrderService, and the dispatch-side status changes that dispatch does not
drive by itself yet (no AssignOrder, no geofence consumer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import (
    dispatch_pb2,
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from core.auth import Role
from core.geo import LatLng
from core.settings import Settings
from tests.helpers import wait_until
from tests.integration.ingest_support import token
from tracking.active_orders import cache_key

REPO = Path(__file__).resolve().parents[2]
TrackResponse = tracking_service_pb2.TrackResponse


class CustomerStream:
    """One Track stream; messages are collected in a thread and read with timeouts."""

    def __init__(self, address: str, tracking_token: str) -> None:
        self._channel = grpc.insecure_channel(address)
        stub = tracking_service_pb2_grpc.TrackingServiceStub(self._channel)
        self._call = stub.Track(tracking_service_pb2.TrackRequest(tracking_token=tracking_token))
        self._queue: queue.Queue[Any] = queue.Queue()
        self.received: list[TrackResponse] = []
        self.ended: grpc.RpcError | str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._queue.put(message)
            self._queue.put("OK")
        except grpc.RpcError as error:
            self._queue.put(error)

    def _take(self, deadline: float) -> bool:
        try:
            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if isinstance(item, TrackResponse):
            self.received.append(item)
        else:
            self.ended = item
        return True

    def wait_for(
        self, predicate: Callable[[TrackResponse], bool], timeout: float = 15.0
    ) -> TrackResponse:
        """The first message (received so far or later) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.received[seen:]:
                if predicate(message):
                    return message
            seen = len(self.received)
            if self.ended is not None:
                raise AssertionError(f"stream ended ({self.ended!r}) before the message")
            if not self._take(deadline):
                raise AssertionError(f"no matching message within {timeout}s")

    def wait_end(self, timeout: float = 15.0) -> grpc.RpcError | str:
        """How the stream ended: "OK" or the error."""
        deadline = time.monotonic() + timeout
        while self.ended is None:
            if not self._take(deadline):
                raise AssertionError(f"stream did not end within {timeout}s")
        return self.ended

    def of_kind(self, kind: str) -> list[TrackResponse]:
        """Every message received so far carrying ``kind``."""
        return [m for m in self.received if m.WhichOneof("update") == kind]

    def close(self) -> None:
        """Cancel the call."""
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._channel.close()


def staff_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Authorization of a dispatcher of the test tenant."""
    return (("authorization", f"Bearer {token(settings, 'dispatcher-1', Role.DISPATCHER)}"),)


def create_driver_and_order(
    settings: Settings,
    dispatch_address: str,
    driver_id: str,
    pickup: LatLng,
    drop_off: LatLng,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> tuple[str, str]:
    """Register the driver and create an instant order through dispatch, as a dispatcher of
    the test tenant unless ``metadata`` says otherwise: (order id, tracking token)."""
    metadata = metadata or staff_metadata(settings)
    with grpc.insecure_channel(dispatch_address) as channel:
        dispatch = dispatch_service_pb2_grpc.DispatchServiceStub(channel)
        dispatch.UpsertDriver(
            dispatch_service_pb2.UpsertDriverRequest(
                driver=dispatch_pb2.Driver(driver_id=driver_id, name="Maria Borg", active=True)
            ),
            metadata=metadata,
        )
        order = dispatch_pb2.Order(kind=dispatch_pb2.ORDER_KIND_INSTANT, size_units=1)
        order.pickup_address.location.lat, order.pickup_address.location.lng = (
            pickup.lat,
            pickup.lng,
        )
        location = order.drop_off_address.location
        location.lat, location.lng = drop_off.lat, drop_off.lng
        order.instructions.text = "ring twice"
        created = order_service_pb2_grpc.OrderServiceStub(channel).CreateOrder(
            order_service_pb2.CreateOrderRequest(idempotency_key=uuid.uuid4().hex, order=order),
            metadata=metadata,
        )
    return created.order.order_id, created.order.tracking_token


def dispatch_sets_status(dsn: str, order_id: str, status: int, driver_id: str = "") -> None:
    """Test set-up standing in for dispatch (assignment, geofence and stop events are not
    wired there yet): one status change through dispatch's own order repository, so the
    event log, the outbox and the relay's publishing are the real ones."""
    from dispatch import order_store

    async def change() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                row = await order_store.fetch_order_any_tenant(conn, order_id, lock=True)
                assert row is not None
                changes = {"driver_id": driver_id} if driver_id else {}
                await order_store.apply_change(
                    conn,
                    row,
                    "test_" + common_pb2.OrderStatus.Name(status).lower(),
                    order_store.SYSTEM,
                    to_status=status,
                    changes=changes,
                )
        finally:
            await conn.close()

    asyncio.run(change())


def wait_tracking_sees(redis_url: str, driver_id: str, order_id: str, status: int) -> None:
    """Wait until tracking's cached active orders of the driver follow the order's new status
    (dropped by the order-event follower, or reloaded): the fan-out and ETAs of the next batch
    then use it. Status changes reach customers and tracking in parallel."""

    def follows() -> bool:
        client = redis.Redis.from_url(redis_url)
        try:
            raw = client.get(cache_key(driver_id))
        finally:
            client.close()
        if raw is None:
            return True
        orders = {o["id"]: o["s"] for o in json.loads(raw)}
        return bool(orders.get(order_id, status) == status)

    wait_until(follows, timeout=10, what=f"tracking cache of {driver_id} at status {status}")


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def record_arrival(dsn: str, order_id: str, status: int, at: dt.datetime) -> None:
    """An arrival as the tracking processes' order follower records it (``eta_arrivals``)."""
    sql(
        dsn,
        "INSERT INTO eta_arrivals (order_id, status, arrived_at) VALUES ($1, $2, $3)",
        order_id,
        status,
        at,
    )


def record_prediction(
    dsn: str, order_id: str, driver: str, delivered: dt.datetime, before_s: float, error_s: float
) -> None:
    """An ETA as the ETA engine records it (``eta_predictions``): shown ``before_s`` before
    the delivery at ``delivered``, ``error_s`` early (actual minus predicted arrival)."""
    made = delivered - dt.timedelta(seconds=before_s)
    arrival = delivered - dt.timedelta(seconds=error_s)
    sql(
        dsn,
        "INSERT INTO eta_predictions (order_id, driver_id, predicted_at, predicted_arrival,"
        " remaining_s, remaining_m) VALUES ($1, $2, $3, $4, $5, 1000)",
        order_id,
        driver,
        made,
        arrival,
        (arrival - made).total_seconds(),
    )


def record_fixes(dsn: str, driver: str, fixes: Sequence[tuple[dt.datetime, LatLng]]) -> None:
    """Fixes in the driver's stored history, as the tracking processor writes them."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for day in sorted({at.date() for at, _ in fixes}):
                await conn.execute("SELECT lastmile_ensure_history_partition($1)", day)
            await conn.executemany(
                "INSERT INTO location_history (driver_id, recorded_at, lat, lng) VALUES ($1, $2, $3, $4)",
                [(driver, at, where.lat, where.lng) for at, where in fixes],
            )
        finally:
            await conn.close()

    asyncio.run(run())
