"""Place an order from a shop's backend, then follow it the way its customer's page does.

    export LASTMILE_API_TOKEN=$(lastmile token service --tenant sim --subject shop-backend)
    .venv/bin/python clients/python/examples/place_and_track.py --seconds 60

It talks gRPC to the edge (127.0.0.1:8080, which routes every service) through the generated
betterproto clients (``lastmile_client``):

1. ``OrderService.CreateOrder`` with an idempotency key, retried with the same key and content
   while the platform is unreachable, so a lost answer never makes a second order;
2. the order's tracking token, the customer's credential, is only in the answer of the call
   that created the order: a replayed call (same key, say after a crash of the backend) gets
   a new link from ``OrderService.RevokeTrackingToken`` (``issue_new``), which also revokes
   the lost one;
3. ``TrackingService.Track`` with that token, printing every update until the order ends or
   ``--seconds`` pass.

docs/integrating.md walks through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import uuid
from typing import Any

import betterproto
from grpclib import Status
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from lastmile_client.lastmile.common.v1 import Address, LatLng, OrderStatus, TimeWindow
from lastmile_client.lastmile.dispatch.v1 import (
    CreateOrderRequest,
    Order,
    OrderKind,
    OrderServiceStub,
    RevokeTrackingTokenRequest,
)
from lastmile_client.lastmile.tracking.v1 import TrackingServiceStub, TrackRequest, TrackResponse

# A shop in Valletta and a door in Sliema (the default city, Malta).
SHOP = LatLng(lat=35.8989, lng=14.5146)
DOOR = LatLng(lat=35.9122, lng=14.5019)
ENDED = {OrderStatus.DELIVERED, OrderStatus.CANCELLED, OrderStatus.RETURNED}
# Worth retrying with the same key: the call may or may not have reached the platform.
TRANSIENT = {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED}
ATTEMPTS = 4
CALL_TIMEOUT_S = 10.0


def parse_args() -> argparse.Namespace:
    """Where the platform is, and which order to place."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edge", default="127.0.0.1:8080", help="host:port of the edge")
    parser.add_argument("--ref", default="shop-order-1", help="the shop's own order number")
    parser.add_argument(
        "--key", default="", help="idempotency key (default: a new one); reuse it to retry"
    )
    parser.add_argument(
        "--by",
        type=dt.datetime.fromisoformat,
        help="deliver by (ISO 8601 with offset; default: an hour from now)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to follow")
    return parser.parse_args()


def new_order(ref: str, by: dt.datetime) -> Order:
    """An instant order from the shop to the door, to arrive in the hour before ``by``."""
    return Order(
        kind=OrderKind.INSTANT,
        external_ref=ref,
        pickup_address=Address(line1="Republic Street 1", city="Valletta", location=SHOP),
        drop_off_address=Address(line1="Tower Road 10", city="Sliema", location=DOOR),
        drop_off_window=TimeWindow(start=by - dt.timedelta(hours=1), end=by),
        size_units=1,
        customer_name="Maria Borg",
        customer_phone="+35621000001",
    )


async def create(orders: OrderServiceStub, request: CreateOrderRequest) -> tuple[Order, str]:
    """The order and its tracking token, retrying transient failures with the same request."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            created = await orders.create_order(request, timeout=CALL_TIMEOUT_S)
            break
        except GRPCError as error:
            if error.status not in TRANSIENT or attempt == ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    order = created.order
    if order.tracking_token:
        return order, order.tracking_token
    # A replay: the token went to the first call. Replace it; the lost one stops working.
    renewed = await orders.revoke_tracking_token(
        RevokeTrackingTokenRequest(order_id=order.order_id, issue_new=True),
        timeout=CALL_TIMEOUT_S,
    )
    return order, renewed.tracking_token


def describe(update: TrackResponse) -> tuple[str, OrderStatus | None]:
    """One line for an update of the customer's stream, and the order's status if it says."""
    kind, found = betterproto.which_one_of(update, "update")
    value: Any = found  # the generated classes are untyped
    match kind:
        case "snapshot":
            return f"snapshot: {value.status.name}, {len(value.timeline)} steps", value.status
        case "status":
            return f"status: {value.status.name}", value.status
        case "position":
            return f"driver at {value.position.lat:.5f}, {value.position.lng:.5f}", None
        case "eta":
            return f"arriving around {value.eta:%H:%M:%S} UTC", None
        case "route_line":
            return f"route: {len(value.points)} points left", None
        case _:
            return "instructions changed", None


async def follow(tracking: TrackingServiceStub, token: str, seconds: float) -> None:
    """Print the Track stream's updates until the order ends or ``seconds`` pass."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for update in tracking.track(TrackRequest(tracking_token=token)):
                line, status = describe(update)
                print(line, flush=True)
                if status in ENDED:
                    return


async def main() -> int:
    """Place the order, print its tracking link, follow it."""
    args = parse_args()
    token = os.environ.get("LASTMILE_API_TOKEN", "")
    if not token:
        print("set LASTMILE_API_TOKEN (lastmile token service ...)", file=sys.stderr)
        return 2
    by = args.by or dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    if args.by is None:
        by += dt.timedelta(hours=1)
    request = CreateOrderRequest(
        idempotency_key=args.key or f"example-{uuid.uuid4()}", order=new_order(args.ref, by)
    )
    host, _, port = args.edge.rpartition(":")
    channel = Channel(host, int(port))
    try:
        orders = OrderServiceStub(channel, metadata={"authorization": f"Bearer {token}"})
        order, tracking_token = await create(orders, request)
        print(f"order {order.order_id}: {order.status.name}, fleet {order.fleet.name}")
        print(f"tracking page: http://{args.edge}/track/#token={tracking_token}")
        # Customers need no platform token: the tracking token is their credential.
        await follow(TrackingServiceStub(channel), tracking_token, args.seconds)
        return 0
    except GRPCError as error:
        print(f"{error.status.name}: {error.message}", file=sys.stderr)
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
