"""RPC handlers for areas, providers and drivers (mixed into ``dispatch.service.Dispatch``)
and for origins (mixed into ``dispatch.service.Origins``)."""

from __future__ import annotations

from typing import Any

from lastmile.dispatch.v1 import dispatch_service_pb2 as pb
from lastmile.origin.v1 import origin_service_pb2 as opb

from core.auth import Role, require
from core.errors import PermissionDenied
from dispatch import areas, assignment, origins, registry, route_read, route_reoptimize, routes
from dispatch.context import DispatchContext

STAFF = (Role.DISPATCHER, Role.SERVICE)
Context = Any  # grpc.aio.ServicerContext; the handlers do not use it


class DispatchAdminHandlers:
    """Areas with their provider rules, external providers, the driver registry."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx

    async def AssignOrder(
        self, request: pb.AssignOrderRequest, context: Context
    ) -> pb.AssignOrderResponse:
        """Manually (re)assign an order to a driver of the tenant."""
        return pb.AssignOrderResponse(order=await assignment.assign_order(self._ctx, request))

    async def PlanWave(self, request: pb.PlanWaveRequest, context: Context) -> pb.PlanWaveResponse:
        """Plan pending planned orders into routes for the given drivers."""
        return await routes.plan_wave_rpc(self._ctx, request)

    async def GetRoute(self, request: pb.GetRouteRequest, context: Context) -> pb.GetRouteResponse:
        """A route by id, or the driver's active route."""
        return await route_read.get_route_rpc(self._ctx, request)

    async def ReoptimizeRoute(
        self, request: pb.ReoptimizeRouteRequest, context: Context
    ) -> pb.ReoptimizeRouteResponse:
        """Insert orders into a route under way, keeping the stop being driven to first."""
        return await route_reoptimize.reoptimize_route_rpc(self._ctx, request)

    async def UpsertArea(
        self, request: pb.UpsertAreaRequest, context: Context
    ) -> pb.UpsertAreaResponse:
        """Create or replace an area and its rules; re-tags origins."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn, conn.transaction():
            area = await areas.upsert_area(conn, tenant_id, request.area)
        return pb.UpsertAreaResponse(area=area)

    async def GetArea(self, request: pb.GetAreaRequest, context: Context) -> pb.GetAreaResponse:
        """One area by id."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            return pb.GetAreaResponse(area=await areas.get_area(conn, tenant_id, request.area_id))

    async def ListAreas(
        self, request: pb.ListAreasRequest, context: Context
    ) -> pb.ListAreasResponse:
        """Every area of the tenant."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            return pb.ListAreasResponse(areas=await areas.list_areas(conn, tenant_id))

    async def DeleteArea(
        self, request: pb.DeleteAreaRequest, context: Context
    ) -> pb.DeleteAreaResponse:
        """Delete an area; origins lose the tag."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn, conn.transaction():
            await areas.delete_area(conn, tenant_id, request.area_id)
        return pb.DeleteAreaResponse()

    async def UpsertProvider(
        self, request: pb.UpsertProviderRequest, context: Context
    ) -> pb.UpsertProviderResponse:
        """Register or update an external provider."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            provider = await registry.upsert_provider(conn, tenant_id, request.provider)
        return pb.UpsertProviderResponse(provider=provider)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> pb.ListProvidersResponse:
        """The tenant's external providers."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            return pb.ListProvidersResponse(
                providers=await registry.list_providers(conn, tenant_id)
            )

    async def UpsertDriver(
        self, request: pb.UpsertDriverRequest, context: Context
    ) -> pb.UpsertDriverResponse:
        """Register or update a driver."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            driver = await registry.upsert_driver(conn, tenant_id, request.driver)
        return pb.UpsertDriverResponse(driver=driver)

    async def ListDrivers(
        self, request: pb.ListDriversRequest, context: Context
    ) -> pb.ListDriversResponse:
        """The tenant's drivers, paged by id."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            drivers, token = await registry.list_drivers(
                conn, self._ctx.settings, tenant_id, request.page_size, request.page_token
            )
        return pb.ListDriversResponse(drivers=drivers, next_page_token=token)


class OriginHandlers:
    """UpsertOrigin, GetOrigin, ListOrigins (origin or staff token)."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx

    async def UpsertOrigin(
        self, request: opb.UpsertOriginRequest, context: Context
    ) -> opb.UpsertOriginResponse:
        """Register or update an origin, tagged with its area."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            origin = await origins.upsert_origin(
                conn, self._ctx.settings, tenant_id, request.origin
            )
        return opb.UpsertOriginResponse(origin=origin)

    async def GetOrigin(
        self, request: opb.GetOriginRequest, context: Context
    ) -> opb.GetOriginResponse:
        """One origin by id (an origin token: only its own)."""
        principal = require(*STAFF, Role.ORIGIN)
        tenant_id = principal.tenant_id
        if principal.role == Role.ORIGIN and principal.subject != request.origin_id:
            raise PermissionDenied(f"origin {principal.subject!r} may read only itself")
        async with self._ctx.database.pool.acquire() as conn:
            origin = await origins.get_origin(conn, tenant_id, request.origin_id)
        return opb.GetOriginResponse(origin=origin)

    async def ListOrigins(
        self, request: opb.ListOriginsRequest, context: Context
    ) -> opb.ListOriginsResponse:
        """The tenant's origins, paged by id."""
        tenant_id = require(*STAFF).tenant_id
        async with self._ctx.database.pool.acquire() as conn:
            found, token = await origins.list_origins(
                conn, self._ctx.settings, tenant_id, request.page_size, request.page_token
            )
        return opb.ListOriginsResponse(origins=found, next_page_token=token)
