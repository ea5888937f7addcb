"""RPC handlers of the origin-facing half of OriginService (mixed into
``dispatch.service.Origins``): watching orders and deciding on them. The rules are in
dispatch.origin_orders, origin_reroute and origin_watch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lastmile.origin.v1 import origin_service_pb2 as opb

from core.auth import Role, require
from dispatch import origin_orders, origin_reroute, origin_watch
from dispatch.context import DispatchContext

#: Who may call: the origin itself (origin token) or staff of its tenant.
CALLERS = (Role.ORIGIN, Role.DISPATCHER, Role.SERVICE)
Context = Any  # grpc.aio.ServicerContext; the handlers do not use it


class OriginOrderHandlers:
    """WatchOriginOrders, AcceptOrder, RejectOrder, SetPreparationTime, MarkReady."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx

    async def WatchOriginOrders(
        self, request: opb.WatchOriginOrdersRequest, context: Context
    ) -> AsyncIterator[opb.WatchOriginOrdersResponse]:
        """The origin's open orders, then every change live; resumable by cursor."""
        principal = require(*CALLERS)
        async for item in origin_watch.watch(self._ctx, principal, request):
            yield item

    async def AcceptOrder(
        self, request: opb.AcceptOrderRequest, context: Context
    ) -> opb.AcceptOrderResponse:
        """Accept a pending order with a preparation time (default: the origin's)."""
        preparation = request.preparation if request.HasField("preparation") else None
        order = await origin_orders.accept(
            self._ctx, require(*CALLERS), request.order_id, preparation
        )
        return opb.AcceptOrderResponse(order=order)

    async def RejectOrder(
        self, request: opb.RejectOrderRequest, context: Context
    ) -> opb.RejectOrderResponse:
        """Reject a pending order: rerouted to a fallback origin or cancelled."""
        order = await origin_reroute.reject(
            self._ctx, require(*CALLERS), request.order_id, request.reason
        )
        return opb.RejectOrderResponse(order=order)

    async def SetPreparationTime(
        self, request: opb.SetPreparationTimeRequest, context: Context
    ) -> opb.SetPreparationTimeResponse:
        """A new preparation time for an accepted order."""
        preparation = request.preparation if request.HasField("preparation") else None
        order = await origin_orders.set_preparation(
            self._ctx, require(*CALLERS), request.order_id, preparation
        )
        return opb.SetPreparationTimeResponse(order=order)

    async def MarkReady(
        self, request: opb.MarkReadyRequest, context: Context
    ) -> opb.MarkReadyResponse:
        """An accepted order is ready for pickup now."""
        order = await origin_orders.mark_ready(self._ctx, require(*CALLERS), request.order_id)
        return opb.MarkReadyResponse(order=order)
