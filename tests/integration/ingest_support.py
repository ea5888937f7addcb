"""Helpers of the ingest tests: a driver app over the generated grpcio stubs, fixes along an
OSRM route, and small synchronous views of Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import grpc
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2, driver_service_pb2_grpc

from core.auth import Role, issue_token
from core.geo import LatLng
from core.settings import Settings

Request = driver_service_pb2.ConnectRequest
Response = driver_service_pb2.ConnectResponse
_CLOSE = object()


def token(
    settings: Settings, subject: str, role: Role = Role.DRIVER, tenant_id: str = "tenant-test"
) -> str:
    """A signed token of the test platform."""
    return issue_token(settings, subject, role, tenant_id)


class DriverApp:
    """One Connect stream driven from a test: requests in, responses read with a timeout."""

    def __init__(self, address: str, bearer: str | None) -> None:
        self._channel = grpc.insecure_channel(address)
        stub = driver_service_pb2_grpc.DriverGatewayServiceStub(self._channel)
        self._requests: queue.Queue[Any] = queue.Queue()
        metadata: tuple[tuple[str, str | bytes], ...] = (
            (("authorization", f"Bearer {bearer}"),) if bearer else ()
        )
        self._call = stub.Connect(self._request_iter(), metadata=metadata)
        self._responses: queue.Queue[Any] = queue.Queue()
        self._passed_over: collections.deque[Response] = collections.deque()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _request_iter(self) -> Iterator[Request]:
        while True:
            item = self._requests.get()
            if item is _CLOSE:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
            self._responses.put(None)
        except grpc.RpcError as error:
            self._responses.put(error)

    def send(self, request: Request) -> None:
        """Queue one request on the stream."""
        self._requests.put(request)

    def recv(self, timeout: float = 15.0) -> Response:
        """The next response (first those :meth:`send_and_wait` passed over); raises the
        stream's error if it ended with one."""
        if self._passed_over:
            return self._passed_over.popleft()
        return self._next(timeout)

    def _next(self, timeout: float) -> Response:
        item = self._responses.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        if item is None:
            raise EOFError("stream ended")
        assert isinstance(item, Response)
        return item

    def hello(self) -> driver_pb2.Welcome:
        """Send Hello, return Welcome."""
        self.send(Request(seq=0, hello=driver_pb2.Hello(device_id="test", app_version="1")))
        response = self.recv()
        assert response.WhichOneof("command") == "welcome", response
        return response.welcome

    def send_and_wait(self, request: Request) -> Response:
        """Send one event and return its Ack or Reject; other commands that come first (a
        command pushed in reaction to the event can overtake its ack) are kept for
        :meth:`recv`."""
        self.send(request)
        while True:
            response = self._next(15.0)
            if response.WhichOneof("command") in ("ack", "reject"):
                return response
            self._passed_over.append(response)

    def close(self) -> None:
        """Half-close and drop the channel."""
        self._requests.put(_CLOSE)
        self._channel.close()


def fix(position: LatLng, at_s: float, speed: float = 8.0, accuracy: float = 5.0) -> Any:
    """A GpsFix at ``position`` captured at epoch second ``at_s``."""
    message = common_pb2.GpsFix(accuracy_m=accuracy, speed_mps=speed, heading_deg=90.0)
    message.position.lat, message.position.lng = position.lat, position.lng
    # Whole microseconds: what PostgreSQL stores.
    message.captured_at.FromMicroseconds(int(at_s * 1e6))
    return message


def batch(seq: int, fixes: Sequence[Any]) -> Request:
    """A LocationBatch event."""
    return Request(seq=seq, locations=driver_pb2.LocationBatch(fixes=list(fixes)))


def trace(points: Sequence[LatLng], start_s: float, jitter_deg: float = 0.00002) -> list[Any]:
    """One fix per point, a second apart, zig-zagging a couple of metres off the road."""
    return [
        fix(LatLng(p.lat + (jitter_deg if i % 2 else -jitter_deg), p.lng), start_s + i)
        for i, p in enumerate(points)
    ]


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` cut into lists of ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def history_rows(dsn: str, driver_id: str) -> list[asyncpg.Record]:
    """Every stored fix of a driver, oldest first."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(
                await conn.fetch(
                    "SELECT * FROM location_history WHERE driver_id = $1 ORDER BY recorded_at",
                    driver_id,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


def now_s() -> float:
    """Wall clock, epoch seconds."""
    return time.time()
