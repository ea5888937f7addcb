"""Helpers of the orders and providers tests: a dispatch process of our own (restartable with
other settings, killable), generated grpcio stubs with a tenant's token, order requests, and
small synchronous views of PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import (
    dispatch_pb2,
    dispatch_service_pb2,
    dispatch_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
)
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.origin.v1 import origin_service_pb2_grpc

from core import live_state_keys as keys
from core import topics
from core.auth import Role, issue_token
from core.settings import Settings
from ops.servers import ManagedProcess, PostgresServer, free_port
from ops.stack import service_process, start_service
from tests.helpers import wait_until

VALLETTA = (35.8989, 14.5146)
SLIEMA = (35.9122, 14.5042)
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Dispatch:
    """A dispatch process on a free port against the session's PostgreSQL and Redis."""

    settings: Settings
    process: ManagedProcess
    log_dir: Path

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.dispatch_port}"

    def restart(self, **changes: Any) -> None:
        """Stop gracefully, start again with ``changes`` applied to the fixture's settings."""
        self.process.stop(grace=10.0)
        self.start(**changes)

    def start(self, **changes: Any) -> None:
        """Start (again) with ``changes`` applied."""
        self.process = service_process("dispatch", self.settings.replace(**changes), self.log_dir)
        start_service(self.process, self.address)

    def crash(self) -> None:
        """SIGKILL: no graceful anything, as in a power cut."""
        pid = self.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        self.process.stop(grace=5.0)


class Client:
    """Stubs of the dispatch process speaking for one tenant."""

    def __init__(
        self, dispatch: Dispatch, tenant: str, role: Role = Role.DISPATCHER, subject: str = "d1"
    ) -> None:
        self.tenant = tenant
        self.channel = grpc.insecure_channel(dispatch.address)
        self.orders = order_service_pb2_grpc.OrderServiceStub(self.channel)
        self.admin = dispatch_service_pb2_grpc.DispatchServiceStub(self.channel)
        self.origins = origin_service_pb2_grpc.OriginServiceStub(self.channel)
        bearer = issue_token(dispatch.settings, subject, role, tenant)
        self.md: Metadata = (("authorization", f"Bearer {bearer}"),)

    def create(
        self, key: str | None = None, message: dispatch_pb2.Order | None = None, **fields: Any
    ) -> Any:
        """CreateOrder of ``message`` (or a new order of ``fields``) with a fresh (or the
        given) idempotency key."""
        request = order_service_pb2.CreateOrderRequest(
            idempotency_key=key or uuid.uuid4().hex,
            order=message if message is not None else order(**fields),
        )
        return self.orders.CreateOrder(request, metadata=self.md)

    def events(self, order_id: str) -> list[Any]:
        """The order's history through ListOrderEvents."""
        request = order_service_pb2.ListOrderEventsRequest(order_id=order_id)
        return list(self.orders.ListOrderEvents(request, metadata=self.md).events)

    def get(self, order_id: str) -> Any:
        request = order_service_pb2.GetOrderRequest(order_id=order_id)
        return self.orders.GetOrder(request, metadata=self.md).order

    def close(self) -> None:
        self.channel.close()


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def window(start_in_s: float, length_s: float = 3600.0) -> common_pb2.TimeWindow:
    """A window starting ``start_in_s`` from now."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=start_in_s)
    result = common_pb2.TimeWindow()
    result.start.FromDatetime(start)
    result.end.FromDatetime(start + dt.timedelta(seconds=length_s))
    return result


def order(
    pickup: tuple[float, float] = VALLETTA,
    drop_off: tuple[float, float] = SLIEMA,
    kind: int = dispatch_pb2.ORDER_KIND_PLANNED,
    drop_window: common_pb2.TimeWindow | None = None,
    origin_id: str = "",
    ref: str = "ref-1",
) -> dispatch_pb2.Order:
    """An order from ``pickup`` to ``drop_off`` with a window an hour from now."""
    message = dispatch_pb2.Order(kind=kind, external_ref=ref, origin_id=origin_id, size_units=1)  # type: ignore[arg-type]
    message.pickup_address.line1 = "Republic St"
    message.pickup_address.location.lat, message.pickup_address.location.lng = pickup
    message.drop_off_address.line1 = "Tower Rd"
    message.drop_off_address.location.lat, message.drop_off_address.location.lng = drop_off
    message.drop_off_window.CopyFrom(drop_window if drop_window is not None else window(3600))
    return message


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def subscribe(url: str, channel: str) -> Any:
    """A pub/sub connection subscribed to ``channel`` (confirmation consumed)."""
    pubsub: Any = redis.Redis.from_url(url).pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["type"] == "subscribe"
    return pubsub


def register_and_assign(client: Client, dsn: str, order_id: str, driver_id: str) -> None:
    """Register a driver and assign the order to it through DispatchService.AssignOrder."""
    driver = dispatch_pb2.Driver(driver_id=driver_id, name="Test Driver", active=True)
    client.admin.UpsertDriver(
        dispatch_service_pb2.UpsertDriverRequest(driver=driver),
        metadata=client.md,
    )
    assign = dispatch_service_pb2.AssignOrderRequest(
        order_id=order_id, driver_id=driver_id, reason="test"
    )
    client.admin.AssignOrder(assign, metadata=client.md)


def stream_events(r: redis.Redis, order_id: str) -> list[tuple[str, Any]]:
    """(stream id, OrderEvent) of the order on the relayed ORDER_EVENTS stream, in order."""
    found = []
    entries: Any = r.xrange(topics.ORDER_EVENTS)
    for entry_id, fields in entries:
        if fields[b"order"].decode() == order_id:
            found.append((entry_id.decode(), dispatch_pb2.OrderEvent.FromString(fields[b"data"])))
    return found


def driver_event(r: redis.Redis, driver_id: str, seq: int, request: Any) -> None:
    """Append a driver event as the gateway does."""
    r.xadd(
        topics.DRIVER_EVENTS,
        {"driver": driver_id, "seq": str(seq), "data": request.SerializeToString()},
    )


ConnectRequest = driver_service_pb2.ConnectRequest
ConnectResponse = driver_service_pb2.ConnectResponse


def own_redis_db(url: str, db: int) -> str:
    """``url`` on Redis database ``db``. Dispatch processes of different test modules share one
    consumer group per stream when they share a database, and a driver's events could then be
    applied by another module's process: each module takes its own (the ``redis_db`` fixture)."""
    return url.rsplit("/", 1)[0] + f"/{db}"


def own_postgres_db(server: PostgresServer, name: str) -> str:
    """The DSN of a fresh PostgreSQL database ``name`` for one test module's dispatch process:
    the outbox relay runs in one process per database, so modules sharing one would relay each
    other's events to their own Redis."""
    server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server.psql(f'CREATE DATABASE "{name}" OWNER lastmile')
    return server.dsn.rsplit("/", 1)[0] + f"/{name}"


def start_dispatch(dsn: str, redis_url: str, data_dir: Path, **changes: Any) -> Dispatch:
    """A started dispatch process with fast polling settings. The instant matcher and the
    wave schedule are off unless a test asks: they would act on other tests' orders."""
    changes = {"instant_enabled": False, "wave_interval_s": 0.0, **changes}
    settings = Settings.from_env({}).replace(
        host="127.0.0.1",
        dispatch_port=free_port(),
        metrics_port=0,
        data_dir=data_dir,
        database_url=dsn,
        redis_url=redis_url,
        shutdown_grace_s=2.0,
        outbox_poll_interval_s=0.05,
        order_consumer_block_ms=200,
        watch_block_ms=200,
        **changes,
    )
    dispatch = Dispatch(settings, service_process("dispatch", settings, data_dir), data_dir)
    dispatch.start()
    return dispatch


@contextmanager
def isolated_dispatch(
    postgres: PostgresServer, redis_url: str, slot: int, **changes: Any
) -> Iterator[Dispatch]:
    """A dispatch process on its own database and Redis database (``slot``), stopped at the end
    with its log checked for tracebacks."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"lastmile-test-dispatch-{slot}-"))
    service = start_dispatch(
        own_postgres_db(postgres, f"dispatch_test_{slot}"),
        own_redis_db(redis_url, slot),
        data_dir,
        **changes,
    )
    try:
        yield service
    finally:
        service.process.stop(grace=10.0)
        log = (data_dir / "dispatch.log").read_text(errors="replace")
        shutil.rmtree(data_dir, ignore_errors=True)
    assert "Traceback" not in log, log[-3000:]


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    return error_of(call)[0]


def error_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code(), str(error.details())


def picked_up_by_driver(client: Client, dispatch: Dispatch, r: redis.Redis) -> tuple[str, str]:
    """A new order, assigned, and picked up through driver stop events on the bus."""
    order_id = client.create().order.order_id
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    register_and_assign(client, dispatch.settings.database_url, order_id, driver_id)
    for seq, kind in (
        (1, driver_pb2.STOP_EVENT_KIND_ARRIVED),
        (2, driver_pb2.STOP_EVENT_KIND_PICKED_UP),
    ):
        stop = driver_pb2.StopEvent(order_id=order_id, stop_id=f"{order_id}-p", kind=kind)
        driver_event(r, driver_id, seq, ConnectRequest(seq=seq, stop=stop))
    wait_until(lambda: client.get(order_id).status == common_pb2.ORDER_STATUS_PICKED_UP, 10)
    return order_id, driver_id


def next_command(live: Any) -> ConnectResponse:
    message = wait_until(lambda: live.get_message(timeout=0.2), 10, what="driver command")
    return ConnectResponse.FromString(message["data"])


def register_driver(client: Client, name: str) -> str:
    """A new active driver of the client's tenant; its id."""
    driver_id = f"drv-{uuid.uuid4().hex[:8]}"
    message = dispatch_pb2.Driver(driver_id=driver_id, name=name, active=True)
    client.admin.UpsertDriver(
        dispatch_service_pb2.UpsertDriverRequest(driver=message), metadata=client.md
    )
    return driver_id


def put_live_state(
    r: redis.Redis,
    driver_id: str,
    where: tuple[float, float],
    status: int = common_pb2.DRIVER_STATUS_IDLE,
) -> None:
    """The driver's live state at ``where`` with ``status``, written as the tracking processor
    writes it (fresh position, not snapped)."""
    lat, lng = where
    r.geoadd(keys.DRIVERS_GEO, (lng, lat, driver_id))
    r.hset(
        keys.driver_key(driver_id),
        mapping={
            keys.FIELD_LAT: repr(lat),
            keys.FIELD_LNG: repr(lng),
            keys.FIELD_POSITION_AT: str(int(dt.datetime.now(dt.UTC).timestamp() * 1000)),
            keys.FIELD_STATUS: str(status),
            keys.FIELD_SNAPPED_LAT: "",
            keys.FIELD_SNAPPED_LNG: "",
        },
    )


def command_of_kind(commands: Any, kind: str, driver_id: str, timeout: float = 20.0) -> Any:
    """The next command of ``kind`` on a subscribed command channel (others are skipped)."""

    def found() -> Any:
        message = commands.get_message(timeout=0.2)
        if message is None or message["type"] != "message":
            return None
        response = ConnectResponse.FromString(message["data"])
        return getattr(response, kind) if response.WhichOneof("command") == kind else None

    return wait_until(found, timeout, what=f"{kind} for {driver_id}")
