"""RPC handlers of OrderService (mixed into ``dispatch.service.Orders``): authentication and
message plumbing around the use cases in dispatch.orders, changes, failures and outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lastmile.dispatch.v1 import order_service_pb2 as pb

from core.auth import Role, require
from core.errors import PermissionDenied
from dispatch import changes, failures, order_store, orders, outbox
from dispatch.context import DispatchContext
from dispatch.tracking_links import revoke_tracking_token

STAFF = (Role.DISPATCHER, Role.SERVICE)
Context = Any  # grpc.aio.ServicerContext; the handlers do not use it


class OrderHandlers:
    """OrderService RPCs. Dispatcher or service token, except UpdateInstructions and
    RescheduleOrder, which customers call with their tracking token."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: Context
    ) -> pb.CreateOrderResponse:
        """Create an order (idempotent by key)."""
        return await orders.create_order(self._ctx, require(*STAFF), request)

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        """One order of the caller's tenant."""
        principal = require(*STAFF)
        order = await orders.get_order(self._ctx, principal.tenant_id, request.order_id)
        return pb.GetOrderResponse(order=order)

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Context
    ) -> pb.ListOrdersResponse:
        """Orders of the caller's tenant, newest first, paged."""
        return await orders.list_orders(self._ctx, require(*STAFF).tenant_id, request)

    async def ListOrderEvents(
        self, request: pb.ListOrderEventsRequest, context: Context
    ) -> pb.ListOrderEventsResponse:
        """The order's history, oldest first."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            events = await order_store.list_events(conn, tenant_id, request.order_id)
        return pb.ListOrderEventsResponse(events=events)

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Context
    ) -> pb.CancelOrderResponse:
        """Cancel before pickup."""
        order = await orders.cancel_order(self._ctx, require(*STAFF), request)
        return pb.CancelOrderResponse(order=order)

    async def WatchOrders(
        self, request: pb.WatchOrdersRequest, context: Context
    ) -> AsyncIterator[pb.WatchOrdersResponse]:
        """Order events: replay after the cursor, then live, until the client cancels."""
        tenant_id = require(*STAFF).tenant_id
        async for item in outbox.watch_orders(self._ctx, tenant_id, request):
            yield item

    async def UpdateInstructions(
        self, request: pb.UpdateInstructionsRequest, context: Context
    ) -> pb.UpdateInstructionsResponse:
        """New delivery instructions; the driver is told at once."""
        order = await changes.update_instructions(self._ctx, request)
        return pb.UpdateInstructionsResponse(order=order)

    async def RescheduleOrder(
        self, request: pb.RescheduleOrderRequest, context: Context
    ) -> pb.RescheduleOrderResponse:
        """A new drop-off window; the driver is told at once."""
        order = await changes.reschedule_order(self._ctx, request)
        return pb.RescheduleOrderResponse(order=order)

    async def ReportFailedAttempt(
        self, request: pb.ReportFailedAttemptRequest, context: Context
    ) -> pb.ReportFailedAttemptResponse:
        """Record a failed attempt and apply the reason's policy. Staff, or the driver the
        order is assigned to."""
        principal = require(*STAFF, Role.DRIVER)
        attempt = failures.Attempt(
            order_id=request.order_id,
            reason=request.reason,
            note=request.note,
            photo_key=request.photo_key,
            lat=request.position.lat if request.HasField("position") else None,
            lng=request.position.lng if request.HasField("position") else None,
        )
        if principal.role == Role.DRIVER:
            await self._check_driver(principal.tenant_id, principal.subject, request.order_id)
        order, policy = await failures.report_failed_attempt(
            self._ctx, principal.tenant_id, attempt, orders.actor_of(principal)
        )
        return pb.ReportFailedAttemptResponse(order=order, applied_policy=policy)  # type: ignore[arg-type]

    async def RevokeTrackingToken(
        self, request: pb.RevokeTrackingTokenRequest, context: Context
    ) -> pb.RevokeTrackingTokenResponse:
        """End the order's customer tracking link at once, optionally issuing a new one."""
        return await revoke_tracking_token(self._ctx, require(*STAFF), request)

    async def _check_driver(self, tenant_id: str, driver_id: str, order_id: str) -> None:
        async with self._ctx.database.pool.acquire() as conn:
            row = await order_store.fetch_order(conn, tenant_id, order_id)
        if row["driver_id"] != driver_id:
            raise PermissionDenied("only the assigned driver may report on this order")
