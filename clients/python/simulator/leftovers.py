"""Orders an earlier run of the same scenario left behind (it was stopped, or its drain time
ran out). The drivers keep their ids from run to run, so without this a new run's drivers
would be offered and routed orders nobody in the run knows of, and count them against their
capacity.

At the start of a run: the earlier runs' orders nobody picked up yet are cancelled; the ones a
driver already carries stay on that driver's route, and this run's driver of the same id
finishes them (it hands them over or reports the failed attempt like any other).
"""

from __future__ import annotations

import re

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from lastmile_client.lastmile.common.v1 import OrderStatus
from lastmile_client.lastmile.dispatch.v1 import (
    CancelOrderRequest,
    ListOrdersRequest,
    Order,
    OrderServiceStub,
)

CANCELLABLE = (
    OrderStatus.PENDING,
    OrderStatus.OFFERED,
    OrderStatus.ASSIGNED,
    OrderStatus.TO_PICKUP,
    OrderStatus.AT_PICKUP,
    OrderStatus.RESCHEDULED,
)
CARRIED = (OrderStatus.PICKED_UP, OrderStatus.NEARBY, OrderStatus.FAILED)
PAGE_SIZE = 500
REASON = "the simulation was restarted: an order of an earlier run"


def order_ref(scenario: str, run_id: str) -> str:
    """The ``external_ref`` of every order one run places."""
    return f"sim-{scenario}-{run_id}"


def is_leftover(external_ref: str, scenario: str, this_run: str) -> bool:
    """Whether an order was placed by another run of ``scenario`` (run ids: 8 hex digits)."""
    pattern = rf"sim-{re.escape(scenario)}-[0-9a-f]{{8}}"
    return re.fullmatch(pattern, external_ref) is not None and external_ref != this_run


async def retire_leftovers(
    orders: OrderServiceStub, scenario: str, this_run: str
) -> tuple[int, int]:
    """Cancel the earlier runs' orders not picked up yet; returns (cancelled, carried)."""
    unfinished = await _unfinished(orders)
    cancelled = carried = 0
    for order in unfinished:
        if not is_leftover(order.external_ref, scenario, this_run):
            continue
        if order.status in CARRIED:
            carried += 1
            continue
        try:
            await orders.cancel_order(CancelOrderRequest(order_id=order.order_id, reason=REASON))
        except GRPCError as error:
            if error.status != Status.FAILED_PRECONDITION:
                raise
            carried += 1  # picked up since it was listed
            continue
        cancelled += 1
    return cancelled, carried


async def _unfinished(orders: OrderServiceStub) -> list[Order]:
    """Every order of the tenant in a status that is not final (read before any change, so
    cancelling cannot move the pages)."""
    found: list[Order] = []
    token = ""
    while True:
        page = await orders.list_orders(
            ListOrdersRequest(
                statuses=[*CANCELLABLE, *CARRIED], page_size=PAGE_SIZE, page_token=token
            )
        )
        found += page.orders
        token = page.next_page_token
        if not token:
            return found
