"""The one server interceptor every service runs: caller identity, domain errors to gRPC
status, metrics and error logging, for unary and streaming RPCs alike; load shedding of
unary RPCs beyond ``server_max_inflight_unary`` in flight (RESOURCE_EXHAUSTED, health exempt);
and checks every request gets before a handler sees it (a message that came whole and
parses, text that can be stored)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from core import auth, inputs, metrics
from core.errors import InvalidArgument, ResourceExhausted, ServiceError
from core.outages import is_outage
from core.ratelimit import InflightGate
from core.settings import Settings

log = logging.getLogger(__name__)

Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]
# Never shed: an orchestrator must still see the health of an overloaded process.
UNSHED_PREFIXES = ("/grpc.health.v1.Health/",)
# Longest status message sent (see _bounded).
MAX_DETAILS_BYTES = 1024
if TYPE_CHECKING:  # the stubs' generic is not subscriptable at run time
    Handler = grpc.RpcMethodHandler[Any, Any]


class ServiceInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of a server; see the module docstring."""

    def __init__(self, settings: Settings, service_label: str) -> None:
        self._settings = settings
        self._label = service_label
        # Load shedding of unary calls (streams are bounded by the server's
        # maximum_concurrent_rpcs; see core.runtime).
        self._gate = InflightGate(settings.server_max_inflight_unary)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        deserializer = _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        # Single-request RPCs are served as client streams whose one message the interceptor
        # takes (_single): grpc, left to itself, never answers a call that half-closed without
        # a message (an empty grpc-web body, a frame cut short); it waits for the deadline.
        if handler.unary_unary:
            behavior = self._unary(handler.unary_unary, method, single=True)
            return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
        if handler.stream_unary:
            behavior = self._unary(handler.stream_unary, method, single=False)
            return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
        if handler.unary_stream:
            behavior = self._streaming(handler.unary_stream, method, single=True)
            return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)
        behavior = self._streaming(handler.stream_stream, method, single=False)  # type: ignore[arg-type]
        return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)

    def _unary(self, behavior: Behavior, method: str, single: bool) -> Behavior:
        sheddable = not method.startswith(UNSHED_PREFIXES)

        async def handle(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin(method, context)
            code = grpc.StatusCode.OK
            entered = sheddable and self._gate.enter()
            try:
                if sheddable and not entered:
                    metrics.SHED.labels(*_split(method)).inc()
                    raise ResourceExhausted(
                        "server overloaded: too many calls in flight; retry with backoff"
                    )
                if single:
                    request = await _single(request)
                result = behavior(_checked(request), context)
                return await result if inspect.isawaitable(result) else result
            except BaseException as exc:
                code = await self._fail(exc, method, context)
                raise
            finally:
                if entered:
                    self._gate.leave()
                self._end(method, code, started, context)

        return handle

    def _streaming(self, behavior: Behavior, method: str, single: bool) -> Behavior:
        async def handle(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = self._begin(method, context)
            service, name = _split(method)
            metrics.STREAMS_OPEN.labels(service, name).inc()
            code = grpc.StatusCode.OK
            try:
                if single:
                    request = await _single(request)
                result = behavior(_checked(request), context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result
            except BaseException as exc:
                code = await self._fail(exc, method, context)
                raise
            finally:
                metrics.STREAMS_OPEN.labels(service, name).dec()
                self._end(method, code, started, context)

        return handle

    def _begin(self, method: str, context: aio.ServicerContext[Any, Any]) -> float:
        service, name = _split(method)
        metrics.RPC_STARTED.labels(service, name).inc()
        authorization = _metadata(context, "authorization")
        try:
            principal = auth.principal_from_metadata(self._settings, authorization)
        except ServiceError:
            # A bad token is only fatal for RPCs that need one: they see no principal.
            principal = None
        auth.set_current_principal(principal)
        return time.perf_counter()

    async def _fail(
        self, exc: BaseException, method: str, context: aio.ServicerContext[Any, Any]
    ) -> grpc.StatusCode:
        if isinstance(exc, ServiceError):
            await context.abort(exc.code, _bounded(str(exc)))
        if isinstance(exc, NotImplementedError):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
        if isinstance(exc, aio.AbortError):
            code = context.code()
            return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        if isinstance(exc, Exception) and is_outage(exc):
            # A dependency crashed or restarts: the client's retry will likely succeed.
            log.warning("dependency unavailable", extra={"method": method, "error": repr(exc)})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry with backoff"
            )
        if isinstance(exc, Exception):
            log.exception("unhandled error", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return grpc.StatusCode.CANCELLED

    def _end(
        self,
        method: str,
        code: grpc.StatusCode,
        started: float,
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        service, name = _split(method)
        final = context.code() if isinstance(context.code(), grpc.StatusCode) else code
        metrics.RPC_HANDLED.labels(service, name, final.name).inc()
        metrics.RPC_SECONDS.labels(service, name).observe(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request message whose bytes protobuf could not parse, so that the
    caller reads INVALID_ARGUMENT; grpc itself would answer UNKNOWN, and a driver stream
    would end as if the server had failed."""

    reason: str


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return parse


async def _single(requests: AsyncIterator[Any]) -> Any:
    """The one message of a single-request RPC (a second one, which no client sends, is left
    unread, as grpc itself does)."""
    async for request in requests:
        return request
    raise InvalidArgument("the request has no complete message: the call ended before one")


def _checked(request: Any) -> Any:
    """``request`` once it passed the checks every request needs, or a client stream whose
    messages are each checked as the handler reads them."""
    if isinstance(request, AsyncIterator):
        return _checked_stream(request)
    _check_message(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _parsed(request, "a message of the stream")


def _parsed(request: Any, what: str) -> Any:
    """``request``, unless its bytes were no message (INVALID_ARGUMENT naming ``what``)."""
    if isinstance(request, Undecodable):
        raise InvalidArgument(f"{what} is not a valid message ({request.reason})")
    return request


def _check_message(request: Any) -> None:
    """Bytes that are no message are refused, and text no handler can store: every string
    may end up in PostgreSQL, which refuses NUL characters (an INTERNAL from deep inside
    otherwise). Client streams (the driver's Connect) get their text checked per event by
    their handler, where a refusal is a Reject and the stream goes on."""
    if isinstance(_parsed(request, "the request"), Message):
        inputs.check_text(request)


def _bounded(details: str) -> str:
    """``details`` cut to ``MAX_DETAILS_BYTES`` of UTF-8. Messages may quote what the client
    sent (a 100 kB id), and the status travels in HTTP/2 trailers, which clients and proxies
    cap (grpc at 8 kB, percent-encoded): an over-long one resets the stream instead."""
    raw = details.encode()
    if len(raw) <= MAX_DETAILS_BYTES:
        return details
    return raw[:MAX_DETAILS_BYTES].decode(errors="ignore") + "..."


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _metadata(context: aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
