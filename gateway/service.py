"""DriverGatewayService: one bidirectional stream per connected driver app.

Protocol of ``Connect`` (see driver_service.proto):

* The caller is a driver token in ``authorization`` metadata; the token's subject is the
  driver id, so a driver only ever speaks as itself. No or a bad token: UNAUTHENTICATED;
  a token of another role: PERMISSION_DENIED.
* Hello first (seq 0), answered by Welcome: the last durably accepted seq, the tracking
  config of the driver's current mode (and no route yet: dispatch pushes RouteUpdate).
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

from core import auth, topics
from core.auth import Role
from core.driver_commands import tracking_config, tracking_mode_key
from core.errors import FailedPrecondition, PermissionDenied, Unauthenticated, Unavailable
from core.settings import Settings
from gateway import validation
from gateway.commands import CommandRouter
from gateway.ingest import Enqueuer

log = logging.getLogger(__name__)

FULL_NAME = driver_service_pb2.DESCRIPTOR.services_by_name["DriverGatewayService"].full_name
Response = driver_service_pb2.ConnectResponse
_END = object()


def _authenticate(settings: Settings, context: aio.ServicerContext[Any, Any]) -> str:
    """The driver id from the token (parsed here again for a precise message)."""
    authorization = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value.decode() if isinstance(value, bytes) else str(value)
    principal = auth.principal_from_metadata(settings, authorization)
    if principal is None:
        raise Unauthenticated("a driver token is required in the authorization metadata")
    if principal.role != Role.DRIVER:
        raise PermissionDenied(f"role {principal.role.value} may not connect as a driver")
    return principal.subject


class DriverGateway(driver_service_pb2_grpc.DriverGatewayServiceServicer):
    """Validates and enqueues driver events, pushes commands down."""

    def __init__(self, settings: Settings, enqueuer: Enqueuer, router: CommandRouter) -> None:
        self._settings = settings
        self._enqueuer = enqueuer
        self._router = router

    async def Connect(
        self,
        request_iterator: AsyncIterator[driver_service_pb2.ConnectRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Response]:
        """The driver app's stream; see the module docstring."""
        driver_id = _authenticate(self._settings, context)
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if first.WhichOneof("event") != "hello" or first.seq != 0:
            raise FailedPrecondition("the first message must be Hello with seq 0")
        yield await self._welcome(driver_id)
        out: asyncio.Queue[Any] = asyncio.Queue()
        detach = self._router.attach(driver_id, out.put_nowait)
        reader = asyncio.create_task(self._read(driver_id, requests, out))
        try:
            while True:
                item = await out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield Response.FromString(item) if isinstance(item, bytes) else item
        finally:
            detach()
            reader.cancel()

    async def _welcome(self, driver_id: str) -> Response:
        try:
            last, mode = await self._enqueuer.peek(driver_id, tracking_mode_key(driver_id))
        except Exception as exc:
            raise Unavailable("event queue unavailable, reconnect with backoff") from exc
        welcome = driver_pb2.Welcome(
            driver_id=driver_id,
            last_acked_seq=last,
            tracking_config=tracking_config(
                self._settings, mode if mode is not None else driver_pb2.TRACKING_MODE_PASSIVE
            ),
        )
        return Response(welcome=welcome)

    async def _read(
        self,
        driver_id: str,
        requests: AsyncIterator[driver_service_pb2.ConnectRequest],
        out: asyncio.Queue[Any],
    ) -> None:
        """Answer each event in order; ends the stream when the app half-closes."""
        previous = 0
        try:
            async for request in requests:
                response = await self._handle(driver_id, request, previous)
                previous = max(previous, request.seq)
                out.put_nowait(response)
            out.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("driver stream failed", extra={"driver": driver_id, "error": str(exc)})
            out.put_nowait(Unavailable("event queue unavailable, reconnect and resend"))

    async def _handle(
        self, driver_id: str, request: driver_service_pb2.ConnectRequest, previous: int
    ) -> Response:
        seq = request.seq
        refusal = validation.check_seq(seq, previous)
        if refusal is None:
            refusal = validation.check_event(request, self._settings, time.time())
        if refusal is not None:
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

    def __init__(self, settings: Settings, enqueuer: Enqueuer, router: CommandRouter) -> None:
        self.servicer = DriverGateway(settings, enqueuer, router)

    def register(self, server: aio.Server) -> None:
        """Add the servicer to the server."""
        driver_service_pb2_grpc.add_DriverGatewayServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Nothing to start (the enqueuer and router are components of their own)."""

    async def stop(self) -> None:
        """Nothing to flush: every acked event is in Redis already."""
