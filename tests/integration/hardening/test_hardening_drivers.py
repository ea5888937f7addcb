"""A driver acts only on its own assignments; per-driver limits of the gateway: the event rate
(over it: a Reject with RESOURCE_EXHAUSTED, the stream and earlier events kept) and one
Connect stream per driver (a new stream replaces the old one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2
from lastmile.driver.v1 import driver_pb2, driver_service_pb2
from lastmile.pod.v1 import pod_pb2, pod_service_pb2

from core.bus import Bus
from core.driver_commands import offer_key, send_command
from tests.helpers import wait_until
from tests.integration.hardening.conftest import LIMITS, Hardened
from tests.integration.hardening.support import (
    DOOR,
    TIMEOUT_S,
    Tenant,
    drive,
    status_of,
    stop,
)
from tests.integration.ingest_support import Request, batch, fix, history_rows, now_s

pytestmark = pytest.mark.integration
PERMISSION_DENIED, RESOURCE_EXHAUSTED = 7, 8  # google.rpc codes of a Reject


@pytest.fixture(scope="module")
def tenant(hardened: Hardened) -> Iterator[Tenant]:
    made = Tenant(hardened)
    yield made
    made.close()


def _reject(response: driver_service_pb2.ConnectResponse) -> driver_pb2.Reject:
    assert response.WhichOneof("command") == "reject", response
    return response.reject


def test_events_about_someone_elses_order_are_refused(tenant: Tenant) -> None:
    owner, other = tenant.driver(), tenant.driver()
    order_id = tenant.create().order.order_id
    tenant.assign(order_id, owner)
    app = tenant.app(other)
    try:
        missing = f"ord_{uuid.uuid4().hex}"
        for seq, request_of in enumerate((_arrived, _failed), start=1):
            theirs, nobodys = request_of(order_id), request_of(missing)
            theirs.seq, nobodys.seq = 2 * seq, 2 * seq + 1
            refused = _reject(app.send_and_wait(theirs))
            unknown = _reject(app.send_and_wait(nobodys))
            assert refused.code == unknown.code == PERMISSION_DENIED
            assert refused.message.replace(order_id, "ID") == unknown.message.replace(missing, "ID")
        # The stream goes on, and the order did not move.
        drive(app, 10, DOOR)
        assert tenant.status(order_id) == common_pb2.ORDER_STATUS_ASSIGNED
    finally:
        app.close()
    # The same rule on the unary RPCs: failed attempts and proofs.
    md: dict[str, Any] = {"metadata": tenant.driver_metadata(other), "timeout": TIMEOUT_S}
    report = order_service_pb2.ReportFailedAttemptRequest(
        order_id=order_id, reason=common_pb2.FAILURE_REASON_NOT_HOME
    )
    upload = pod_service_pb2.CreateUploadUrlRequest(
        order_id=order_id, kind=pod_pb2.PROOF_KIND_PHOTO, content_type="image/jpeg"
    )
    upload.content_length = 1000
    for call in (
        lambda: tenant.orders.ReportFailedAttempt(report, **md),
        lambda: tenant.pod.CreateUploadUrl(upload, **md),
    ):
        assert status_of(call)[0] == grpc.StatusCode.PERMISSION_DENIED


def _arrived(order_id: str) -> Request:
    return stop(0, order_id, driver_pb2.STOP_EVENT_KIND_ARRIVED)


def _failed(order_id: str) -> Request:
    attempt = driver_pb2.FailedAttempt(order_id=order_id, reason=common_pb2.FAILURE_REASON_NOT_HOME)
    return Request(seq=0, failed_attempt=attempt)


def test_answers_to_offers_made_to_another_driver_are_refused(
    hardened: Hardened, tenant: Tenant
) -> None:
    offered, other = tenant.driver(), tenant.driver()
    offer_id = f"off-{uuid.uuid4().hex[:8]}"
    record = {"driver_id": offered, "tenant_id": tenant.name, "order_ids": [], "expires_ms": 0}
    client = redis.Redis.from_url(hardened.settings.redis_url)
    try:  # what dispatch writes when it offers (core.driver_commands.offer_key)
        client.set(offer_key(offer_id), json.dumps(record), ex=600)
    finally:
        client.close()
    answer = driver_pb2.OfferAnswer(offer_id=offer_id, accepted=True)
    thief = tenant.app(other)
    try:
        refused = _reject(thief.send_and_wait(Request(seq=1, offer_answer=answer)))
        assert refused.code == PERMISSION_DENIED and offer_id in refused.message
        # An answer to an offer that is gone (answered, expired) is harmless: acked.
        gone = driver_pb2.OfferAnswer(offer_id=f"off-{uuid.uuid4().hex[:8]}", accepted=True)
        acked = thief.send_and_wait(Request(seq=2, offer_answer=gone))
        assert acked.WhichOneof("command") == "ack"
    finally:
        thief.close()
    mine = tenant.app(offered)
    try:
        acked = mine.send_and_wait(Request(seq=1, offer_answer=answer))
        assert acked.WhichOneof("command") == "ack"
    finally:
        mine.close()


def test_over_the_rate_the_batch_is_refused_and_nothing_earlier_lost(
    hardened: Hardened, tenant: Tenant
) -> None:
    driver_id = f"flood-{uuid.uuid4().hex[:8]}"
    app = tenant.app(driver_id)
    burst = int(LIMITS["gateway_driver_burst"])
    try:
        start = now_s() - 2 * burst
        for seq in range(1, burst + 1):
            fixes = [fix(DOOR, start + 2 * seq - 1), fix(DOOR, start + 2 * seq)]
            assert app.send_and_wait(batch(seq, fixes)).WhichOneof("command") == "ack"
        over = _reject(app.send_and_wait(batch(burst + 1, [fix(DOOR, now_s())])))
        assert over.code == RESOURCE_EXHAUSTED and over.seq == burst + 1
        # The stream is still open: commands still reach the app.
        command = driver_service_pb2.ConnectResponse(
            order_cancelled=driver_pb2.OrderCancelled(order_id="ord-x", reason="test")
        )
        _publish(hardened, driver_id, command)
        assert app.recv().WhichOneof("command") == "order_cancelled"
    finally:
        app.close()
    dsn = hardened.settings.database_url
    wait_until(lambda: len(history_rows(dsn, driver_id)) == 2 * burst, TIMEOUT_S)


def _publish(h: Hardened, driver_id: str, command: driver_service_pb2.ConnectResponse) -> None:
    async def send() -> None:
        bus = Bus(h.settings)
        await bus.start()
        try:
            await send_command(bus, driver_id, command)
        finally:
            await bus.stop()

    asyncio.run(send())


def test_a_second_stream_of_a_driver_replaces_the_first(tenant: Tenant) -> None:
    driver_id = f"twice-{uuid.uuid4().hex[:8]}"
    first = tenant.app(driver_id)
    bystander = tenant.app(f"other-{uuid.uuid4().hex[:8]}")
    second = tenant.app(driver_id)
    try:
        with pytest.raises(grpc.RpcError) as ended:
            while True:
                first.recv()
        error: Any = ended.value
        assert error.code() == grpc.StatusCode.ABORTED
        assert "replaced" in (error.details() or "")
        drive(second, 1, DOOR)  # the new stream works
        drive(bystander, 1, DOOR)  # other drivers are untouched
    finally:
        for app in (first, second, bystander):
            app.close()
