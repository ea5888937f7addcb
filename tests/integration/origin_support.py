"""Helpers of the origin tests: origins registered through OriginService, origin-token
clients, the decision calls, and WatchOriginOrders read with a deadline (a message that never
comes fails the test instead of hanging it)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.origin.v1 import origin_pb2
from lastmile.origin.v1 import origin_service_pb2 as opb

from core.auth import Role
from tests.integration.orders_support import VALLETTA, Client, Dispatch

FLORIANA = (35.8935, 14.5060)
HAMRUN = (35.8849, 14.4891)
# Longest wait for one stream message (seconds of wall time).
STREAM_DEADLINE_S = 30.0


def new_origin_id() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def add_origin(
    staff: Client,
    origin_id: str | None = None,
    where: tuple[float, float] = VALLETTA,
    preparation_s: int = 600,
    fallbacks: tuple[str, ...] = (),
    closed: bool = False,
) -> str:
    """Register an origin of the staff client's tenant; returns its id."""
    origin = origin_pb2.Origin(
        origin_id=origin_id or new_origin_id(),
        name="Test Kitchen",
        kind=origin_pb2.ORIGIN_KIND_RESTAURANT,
        default_preparation=Duration(seconds=preparation_s),
        fallback_origin_ids=list(fallbacks),
        closed=closed,
    )
    origin.address.line1 = "Kitchen St"
    origin.address.location.lat, origin.address.location.lng = where
    staff.origins.UpsertOrigin(opb.UpsertOriginRequest(origin=origin), metadata=staff.md)
    return origin.origin_id


def origin_client(dispatch: Dispatch, tenant: str, origin_id: str) -> Client:
    """Stubs speaking with the origin's own token."""
    return Client(dispatch, tenant, Role.ORIGIN, subject=origin_id)


def minutes(count: float) -> Duration:
    return Duration(seconds=int(count * 60))


def accept(client: Client, order_id: str, preparation: Duration | None = None) -> Any:
    request = opb.AcceptOrderRequest(order_id=order_id)
    if preparation is not None:
        request.preparation.CopyFrom(preparation)
    return client.origins.AcceptOrder(request, metadata=client.md).order


def reject(client: Client, order_id: str, reason: str = "out of dough") -> Any:
    request = opb.RejectOrderRequest(order_id=order_id, reason=reason)
    return client.origins.RejectOrder(request, metadata=client.md).order


def set_preparation(client: Client, order_id: str, preparation: Duration) -> Any:
    request = opb.SetPreparationTimeRequest(order_id=order_id, preparation=preparation)
    return client.origins.SetPreparationTime(request, metadata=client.md).order


def mark_ready(client: Client, order_id: str) -> Any:
    request = opb.MarkReadyRequest(order_id=order_id)
    return client.origins.MarkReady(request, metadata=client.md).order


def seconds_from_now(stamp: Timestamp) -> float:
    """A Timestamp as seconds from now (negative: past)."""
    moment = stamp.ToDatetime(tzinfo=dt.UTC)
    return (moment - dt.datetime.now(dt.UTC)).total_seconds()


class Watch:
    """One WatchOriginOrders call; messages are read with a deadline per message."""

    def __init__(self, client: Client, origin_id: str = "", after_cursor: str = "") -> None:
        request = opb.WatchOriginOrdersRequest(origin_id=origin_id, after_cursor=after_cursor)
        self._call = client.origins.WatchOriginOrders(
            request, metadata=client.md, timeout=STREAM_DEADLINE_S
        )
        self._messages: Iterator[Any] = iter(self._call)

    def next(self) -> Any:
        """The next OriginOrder (DEADLINE_EXCEEDED when none comes in time)."""
        return next(self._messages).order

    def until(self, wanted: Callable[[Any], bool]) -> Any:
        """The first OriginOrder matching ``wanted`` (others are skipped)."""
        while True:
            order = self.next()
            if wanted(order):
                return order

    def error(self) -> tuple[grpc.StatusCode, str]:
        """The status the stream ends with (for calls that are refused)."""
        try:
            next(self._messages)
        except grpc.RpcError as exc:
            failed: Any = exc
            return failed.code(), str(failed.details())
        raise AssertionError("the stream sent a message instead of failing")

    def close(self) -> None:
        self._call.cancel()  # type: ignore[no-untyped-call]


def change_of(order_id: str, change: str) -> Callable[[Any], bool]:
    """Matches the message of ``order_id`` caused by the event ``change``."""
    return lambda order: bool(order.order_id == order_id and order.change == change)
