"""The dispatch process's servicers: orders, planning, origins, webhooks."""

from __future__ import annotations

from lastmile.dispatch.v1 import (
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.integration.v1 import integration_service_pb2, integration_service_pb2_grpc
from lastmile.origin.v1 import origin_service_pb2, origin_service_pb2_grpc

from core.runtime import Servicer
from dispatch.admin_api import DispatchAdminHandlers, OriginHandlers
from dispatch.context import DispatchContext
from dispatch.order_api import OrderHandlers
from dispatch.origin_api import OriginOrderHandlers
from dispatch.webhooks.api import WebhookHandlers


class Orders(OrderHandlers, order_service_pb2_grpc.OrderServiceServicer):
    """Order lifecycle and customer changes."""


class Dispatch(DispatchAdminHandlers, dispatch_service_pb2_grpc.DispatchServiceServicer):
    """Waves, routes, re-optimization, areas, providers, drivers."""


class Origins(OriginHandlers, OriginOrderHandlers, origin_service_pb2_grpc.OriginServiceServicer):
    """Origin-facing API: incoming orders, accept/reject, preparation, ready (both mixins keep
    the context as ``_ctx``)."""


class Webhooks(WebhookHandlers, integration_service_pb2_grpc.WebhookServiceServicer):
    """Integrator webhooks and their delivery log."""


def components(ctx: DispatchContext) -> list[Servicer]:
    """Every servicer of the dispatch process as host components (sharing ``ctx``)."""
    return [
        Servicer(
            Orders(ctx),
            order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
        ),
        Servicer(
            Dispatch(ctx),
            dispatch_service_pb2_grpc.add_DispatchServiceServicer_to_server,
            dispatch_service_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name,
        ),
        Servicer(
            Origins(ctx),
            origin_service_pb2_grpc.add_OriginServiceServicer_to_server,
            origin_service_pb2.DESCRIPTOR.services_by_name["OriginService"].full_name,
        ),
        Servicer(
            Webhooks(ctx),
            integration_service_pb2_grpc.add_WebhookServiceServicer_to_server,
            integration_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
        ),
    ]
