"""The answer policy for silent origins on real dispatch processes (own PostgreSQL and Redis
databases, slot 9) with a one-second answer timeout: auto_accept with the origin's default
preparation, reject (rerouted to a fallback, then cancelled), and two replicas answering
each order exactly once."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lastmile.common.v1 import common_pb2

from ops.servers import PostgresServer, RedisServer
from tests.helpers import wait_until
from tests.integration.orders_support import (
    Client,
    Dispatch,
    isolated_dispatch,
    new_tenant,
    start_dispatch,
)
from tests.integration.origin_support import HAMRUN, add_origin

pytestmark = pytest.mark.integration
FAST = {"origin_answer_timeout_s": 1.0, "origin_sweep_interval_s": 0.1}


@pytest.fixture(scope="module")
def dispatch(
    postgres_server: PostgresServer, redis_server: RedisServer, redis_db: int
) -> Iterator[Dispatch]:
    with isolated_dispatch(
        postgres_server, redis_server.url, redis_db, origin_answer_policy="auto_accept", **FAST
    ) as service:
        yield service


def staff_of(dispatch: Dispatch) -> Client:
    return Client(dispatch, new_tenant())


def types_of(staff: Client, order_id: str) -> list[str]:
    return [e.event_type for e in staff.events(order_id)]


def answered(staff: Client, order_id: str, count: int) -> list[Any]:
    """The order's history once it holds ``count`` events after its creation."""
    history = staff.events(order_id)
    return history if len(history) >= count + 1 else []


def test_silent_origin_auto_accepts_with_its_default_preparation(dispatch: Dispatch) -> None:
    staff = staff_of(dispatch)
    origin_id = add_origin(staff, preparation_s=420)
    created = staff.create(origin_id=origin_id).order
    history = wait_until(lambda: answered(staff, created.order_id, 1), 15, what="auto-accept")
    event = history[1]
    assert (event.event_type, event.actor) == ("origin_accepted", "system")
    details = json.loads(event.details_json)
    assert details["answered_by"] == "answer_policy" and details["preparation_s"] == 420
    # Answered about a second after the order came in, ready 7 minutes after that.
    waited = (event.at.ToDatetime() - created.created_at.ToDatetime()).total_seconds()
    assert 1.0 <= waited < 10.0
    ready_in = dt.datetime.fromisoformat(details["ready_at"]) - dt.datetime.now(dt.UTC)
    assert 400 < ready_in.total_seconds() <= 420
    staff.close()


def test_reject_policy_reroutes_then_cancels(dispatch: Dispatch) -> None:
    dispatch.restart(origin_answer_policy="reject")
    try:
        staff = staff_of(dispatch)
        fallback = add_origin(staff, where=HAMRUN)
        origin_id = add_origin(staff, fallbacks=(fallback,))
        order_id = staff.create(origin_id=origin_id).order.order_id
        history = wait_until(lambda: answered(staff, order_id, 3), 20, what="two rejections")
        assert [e.event_type for e in history] == [
            "created",
            "origin_rejected",
            "origin_rerouted",
            "origin_rejected",
        ]
        first, _, last = history[1:]
        assert json.loads(first.details_json)["rerouted_to"] == fallback
        assert last.to_status == common_pb2.ORDER_STATUS_CANCELLED
        details = json.loads(last.details_json)
        assert details["reason"] == "origin_rejected" and details["origin_id"] == fallback
        assert details["origin_reason"] == "no answer within 1 s"
        assert {e.actor for e in history[1:]} == {"system"}
        staff.close()
    finally:
        dispatch.restart(origin_answer_policy="auto_accept")


def test_two_replicas_answer_each_order_once(dispatch: Dispatch) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-dispatch-replica-"))
    settings = dispatch.settings
    replica = start_dispatch(
        settings.database_url,
        settings.redis_url,
        data_dir,
        origin_answer_policy="auto_accept",
        **FAST,
    )
    try:
        staff = staff_of(dispatch)
        origin_id = add_origin(staff)
        orders = [staff.create(origin_id=origin_id).order.order_id for _ in range(12)]
        wait_until(lambda: all(answered(staff, o, 1) for o in orders), 30, what="all answered")
        # Both replicas swept the same due orders: each was answered by one of them only.
        for order_id in orders:
            assert types_of(staff, order_id) == ["created", "origin_accepted"]
        staff.close()
    finally:
        replica.process.stop(grace=10.0)
        log = (data_dir / "dispatch.log").read_text(errors="replace")
        shutil.rmtree(data_dir, ignore_errors=True)
    assert "Traceback" not in log, log[-3000:]
