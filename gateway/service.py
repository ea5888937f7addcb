"""DriverGatewayService: one bidirectional stream per connected driver app.

Protocol of ``Connect`` (see driver_service.proto):

* The caller is a driver token in ``authorization`` metadata; the token's subject is the
  driver id, so a driver only ever speaks as itself. No or a bad token: UNAUTHENTICATED;
  a token of another role: PERMISSION_DENIED.
* Hello first (seq 0), answered by Welcome: the last durably accepted seq, the tracking
  config of the driver's current mode, and the driver's current route version when the app
  has not acknowledged it (mirrored by dispatch in Redis, core.route_plans): a RouteUpdate
  missed while disconnected arrives this way. Later versions come as RouteUpdate commands.
* The tracking config carries the intervals of the driver's tenant (gateway.tracking_configs):
  a mode switch published by tracking names the mode only and is completed here, and when the
  tenant's intervals change every open stream of the tenant gets the config of its mode.
* Then one Ack or Reject per event, in order:
  - seq must increase along one stream; a seq at or below an earlier one of the same stream
    is refused (FAILED_PRECONDITION) as going backwards;
  - a seq at or below the last accepted seq (an event accepted before this stream, resent)
    is acked again and not enqueued a second time;
  - gaps are allowed (a refused seq is not recorded: the app moves on to the next number);
  - invalid content is refused with INVALID_ARGUMENT and a message naming the field;
  - otherwise the event is appended to Redis (locations to the driver's ping shard, other
    events to DRIVER_EVENTS) and acked only once Redis has it.
* Commands published on the driver's channel (core.driver_commands) are forwarded as they
  come, for the life of the stream.
* Limits (docs/security.md): a driver sends at most ``gateway_driver_rate_per_s`` events per
  second (burst ``gateway_driver_burst``) per process; an event over it gets a Reject with
  RESOURCE_EXHAUSTED (send it again later under a new seq) and the stream goes on. A new
  stream of a driver already at ``gateway_max_streams_per_driver`` streams ends the oldest
  with ABORTED (gateway.streams). Stop events, failed attempts and offer answers about
  someone else's order or offer are refused with PERMISSION_DENIED (gateway.ownership).
* Every event is enqueued with the driver's tenant (from the token), which the tracking
  processor keeps in the live state so that dispatchers see only their tenant's fleet.

A stream costs a coroutine, a reader task and a small queue: no thread per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc
from prometheus_client import Counter

from core import auth, metrics, topics
from core.auth import Principal, Role
from core.db import Database
from core.driver_commands import tracking_mode_key
from core.errors import (
    FailedPrecondition,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from core.ratelimit import KeyedRateLimiter
from core.settings import Settings
from gateway import ownership, validation
from gateway.commands import CommandRouter
from gateway.ingest import Enqueuer
from gateway.streams import StreamRegistry
from gateway.tracking_configs import TrackingConfigs

log = logging.getLogger(__name__)

FULL_NAME = driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"].full_name
Response = driver_service_pb2.ConnectResponse
_END = object()
# Queued for a stream when its tenant's tracking intervals changed.
_RECONFIGURE = object()
# google.rpc.Code of a Reject for an event over the driver's rate.
RESOURCE_EXHAUSTED = 8
REJECTS = Counter(
    "lastmile_gateway_rejects_total",
    "Driver events refused with a Reject, by google.rpc code.",
    ["code"],
)


def _authenticate(settings: Settings, context: aio.ServicerContext[Any, Any]) -> Principal:
    """The driver from the token (parsed here again for a precise message)."""
    authorization = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value.decode() if isinstance(value, bytes) else str(value)
    principal = auth.principal_from_metadata(settings, authorization)
    if principal is None:
        raise Unauthenticated("a driver token is required in the authorization metadata")
    if principal.role != Role.DRIVER:
        raise PermissionDenied(f"role {principal.role.value} may not connect as a driver")
    return principal


class DriverGateway(driver_service_pb2_grpc.DriverGatewayServiceServicer):
    """Validates and enqueues driver events, pushes commands down."""

    def __init__(
        self,
        settings: Settings,
        enqueuer: Enqueuer,
        router: CommandRouter,
        database: Database,
        configs: TrackingConfigs,
    ) -> None:
        self._settings = settings
        self._enqueuer = enqueuer
        self._router = router
        self._database = database
        self._configs = configs
        self._streams = StreamRegistry(settings.gateway_max_streams_per_driver)
        self._rate = KeyedRateLimiter(
            settings.gateway_driver_rate_per_s,
            settings.gateway_driver_burst,
            settings.limiter_max_keys,
        )

    def end_streams(self, reason: BaseException) -> None:
        """End every open Connect stream with ``reason``."""
        ended = self._streams.end_all(reason)
        log.info("driver streams ended", extra={"count": ended, "reason": str(reason)})

    async def Connect(
        self,
        request_iterator: AsyncIterator[driver_service_pb2.ConnectRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Response]:
        """The driver app's stream; see the module docstring."""
        principal = _authenticate(self._settings, context)
        driver_id = principal.subject
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if first.WhichOneof("event") != "hello" or first.seq != 0:
            raise FailedPrecondition("the first message must be Hello with seq 0")
        out: asyncio.Queue[Any] = asyncio.Queue()
        # Watching before Welcome reads the intervals: a change in between is sent after it.
        unwatch = self._configs.watch(principal.tenant_id, lambda: out.put_nowait(_RECONFIGURE))
        try:
            welcome = await self._welcome(principal)
            yield welcome
            mode = welcome.welcome.tracking_config.mode
            unregister = self._streams.open(driver_id, out.put_nowait)
            detach = self._router.attach(driver_id, out.put_nowait)
            reader = asyncio.create_task(self._read(principal, requests, out))
            try:
                while True:
                    item = await out.get()
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    if item is _RECONFIGURE:
                        item = Response(
                            tracking_config=await self._configs.config(principal.tenant_id, mode)
                        )
                    elif isinstance(item, bytes):  # a command from the bus
                        item = Response.FromString(item)
                        if item.WhichOneof("command") == "tracking_config":
                            # A mode switch names the mode; the intervals are the tenant's.
                            mode = item.tracking_config.mode
                            item.tracking_config.CopyFrom(
                                await self._configs.config(principal.tenant_id, mode)
                            )
                    yield item
            finally:
                unregister()
                detach()
                reader.cancel()
        finally:
            unwatch()

    async def _welcome(self, principal: Principal) -> Response:
        driver_id = principal.subject
        try:
            last, mode, route = await self._enqueuer.peek(driver_id, tracking_mode_key(driver_id))
        except Exception as exc:
            raise Unavailable("event queue unavailable, reconnect with backoff") from exc
        config = await self._configs.config(
            principal.tenant_id, mode if mode is not None else driver_pb2.TRACKING_MODE_PASSIVE
        )
        welcome = driver_pb2.Welcome(
            driver_id=driver_id, last_acked_seq=last, tracking_config=config
        )
        if route is not None:  # a version pushed while the app was away, or not acknowledged
            welcome.route.CopyFrom(route)
        return Response(welcome=welcome)

    async def _read(
        self,
        principal: Principal,
        requests: AsyncIterator[driver_service_pb2.ConnectRequest],
        out: asyncio.Queue[Any],
    ) -> None:
        """Answer each event in order; ends the stream when the app half-closes."""
        driver_id = principal.subject
        previous = 0
        try:
            async for request in requests:
                response = await self._handle(principal, request, previous)
                previous = max(previous, request.seq)
                out.put_nowait(response)
            out.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except ServiceError as exc:  # the stream itself is bad (a message that is no event)
            out.put_nowait(exc)
        except Exception as exc:
            log.warning("driver stream failed", extra={"driver": driver_id, "error": str(exc)})
            out.put_nowait(Unavailable("event queue unavailable, reconnect and resend"))

    async def _refusal(
        self, principal: Principal, request: driver_service_pb2.ConnectRequest, previous: int
    ) -> validation.Refusal | None:
        """Why the event is refused, in order: sequence, rate, content, ownership."""
        refusal = validation.check_seq(request.seq, previous)
        if refusal is not None:
            return refusal
        if not self._rate.allow(principal.subject):
            metrics.LIMITED.labels("driver_events").inc()
            return validation.Refusal(
                RESOURCE_EXHAUSTED,
                f"more than {self._settings.gateway_driver_rate_per_s:g} events/s: send it again"
                " later under a new seq",
            )
        refusal = validation.check_event(request, self._settings, time.time())
        if refusal is not None or request.WhichOneof("event") not in ownership.CHECKED:
            return refusal
        if request.seq <= await self._enqueuer.last_seq(principal.subject):
            return None  # a resend: acked as a duplicate, whatever happened since
        return await ownership.check_ownership(
            self._database.pool,
            self._enqueuer.redis,
            principal.subject,
            principal.tenant_id,
            request,
        )

    async def _handle(
        self, principal: Principal, request: driver_service_pb2.ConnectRequest, previous: int
    ) -> Response:
        seq = request.seq
        driver_id = principal.subject
        refusal = await self._refusal(principal, request, previous)
        if refusal is not None:
            REJECTS.labels(str(refusal.code)).inc()
            return Response(
                reject=driver_pb2.Reject(seq=seq, code=refusal.code, message=refusal.message)
            )
        received_ms = int(time.time() * 1000)
        if request.WhichOneof("event") == "locations":
            shard = topics.shard_of(driver_id, self._settings.ingest_shards)
            stream = topics.ping_stream(shard)
            data = request.locations.SerializeToString()
        else:
            stream = topics.DRIVER_EVENTS
            data = request.SerializeToString()
        fields: dict[str, bytes | str | int] = {
            "driver": driver_id,
            "tenant": principal.tenant_id,
            "seq": seq,
            "data": data,
            "received_ms": received_ms,
        }
        # Duplicates (seq at or below the last accepted one) are acked without a second append.
        await self._enqueuer.append(driver_id, seq, stream, fields)
        return Response(ack=driver_pb2.Ack(seq=seq))


class GatewayComponent:
    """The servicer plus the shared enqueuer and command router, as one host component."""

    service_names = (FULL_NAME,)

    def __init__(
        self,
        settings: Settings,
        enqueuer: Enqueuer,
        router: CommandRouter,
        database: Database,
        configs: TrackingConfigs,
    ) -> None:
        self.servicer = DriverGateway(settings, enqueuer, router, database, configs)

    def register(self, server: aio.Server) -> None:
        """Add the servicer to the server."""
        driver_service_pb2_grpc.add_DriverGatewayServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Nothing to start (the enqueuer and router are components of their own)."""

    async def drain(self) -> None:
        """Shutting down: every driver stream ends with UNAVAILABLE at once, so apps reconnect
        (to another gateway) with backoff and resend what was not acked."""
        self.servicer.end_streams(
            Unavailable("the gateway is shutting down; reconnect with backoff")
        )

    async def stop(self) -> None:
        """Nothing to flush: every acked event is in Redis already."""
