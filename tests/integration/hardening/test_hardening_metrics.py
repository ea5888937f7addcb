"""The operators' metrics on each service's /metrics endpoint, with sensible values after real
traffic: ingest rate (gateway), consumer lag per shard and fan-out latency (tracking),
dispatch decisions (dispatch), proof checks (pod)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.driver.v1 import driver_pb2

from tests.helpers import wait_until
from tests.integration.customer_support import CustomerStream
from tests.integration.hardening.conftest import Hardened
from tests.integration.hardening.support import (
    DOOR,
    TIMEOUT_S,
    Tenant,
    drive,
    metric,
    stop,
    under_way,
)
from tests.integration.pod_support import confirm_photo_proof

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def traffic(hardened: Hardened) -> Iterator[Tenant]:
    """A delivery end to end: an order assigned, driven to with a customer watching, picked
    up, and delivered with a photo proof."""
    tenant = Tenant(hardened)
    driver_id = tenant.driver()
    app = tenant.app(driver_id)
    try:
        token = under_way(tenant, app, driver_id)
        order_id = tenant.get_tracking(token).snapshot.order_id
        stream = CustomerStream(hardened.addresses["tracking"], token)
        try:
            stream.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
            drive(app, 2, DOOR)
            stream.wait_for(lambda m: m.WhichOneof("update") == "position")
        finally:
            stream.close()
        picked = app.send_and_wait(stop(3, order_id, driver_pb2.STOP_EVENT_KIND_PICKED_UP))
        assert picked.WhichOneof("command") == "ack"
        tenant.wait_status(order_id, common_pb2.ORDER_STATUS_PICKED_UP)
        _photo_proof(tenant, order_id, driver_id)
        tenant.wait_status(order_id, common_pb2.ORDER_STATUS_DELIVERED)
        yield tenant
    finally:
        app.close()
        tenant.close()


def _photo_proof(tenant: Tenant, order_id: str, driver_id: str) -> None:
    taken = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=20)
    md = tenant.driver_metadata(driver_id)
    confirm_photo_proof(tenant.pod, md, order_id, DOOR, taken, TIMEOUT_S)


def test_ingest_rate_of_the_gateway(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["gateway"]
    pings = metric(url, "lastmile_gateway_events_enqueued_total", {"kind": "lastmile:pings"})
    events = metric(
        url, "lastmile_gateway_events_enqueued_total", {"kind": "lastmile:driver-events"}
    )
    assert pings is not None and pings >= 1
    assert events is not None and events >= 2  # the two stop events at least


def test_consumer_lag_per_shard(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["tracking"]
    for shard in range(hardened.settings.ingest_shards):
        labels = {"shard": str(shard)}

        def measured(labels: dict[str, str] = labels) -> bool:
            lag = metric(url, "lastmile_tracking_shard_lag_entries", labels)
            pending = metric(url, "lastmile_tracking_shard_pending_entries", labels)
            return lag is not None and pending is not None

        wait_until(measured, TIMEOUT_S, what=f"lag gauges of shard {shard}")
        # Everything sent was processed: nothing stays behind for long.
        wait_until(
            lambda labels=labels: metric(url, "lastmile_tracking_shard_lag_entries", labels) == 0,  # type: ignore[misc]
            TIMEOUT_S,
            what=f"shard {shard} caught up",
        )


def test_fanout_latency(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["tracking"]
    count = metric(url, "lastmile_tracking_fanout_latency_seconds_count")
    total = metric(url, "lastmile_tracking_fanout_latency_seconds_sum")
    assert count is not None and count >= 1
    assert total is not None and 0 <= total / count < 60  # receipt to publish, seconds


def test_processing_round_steps(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["tracking"]
    name = "lastmile_tracking_round_step_seconds_count"
    for step in ("snap", "live_state", "history", "ack", "fleet", "PositionFanout", "EtaEngine"):
        count = metric(url, name, {"step": step})
        assert count is not None and count >= 1, step
    total = metric(url, "lastmile_tracking_round_step_seconds_sum", {"step": "history"})
    assert total is not None and total > 0


def test_collector_settled_in_every_service(hardened: Hardened, traffic: Tenant) -> None:
    """Each serving process froze its start-up objects (core.gc_tuning) and reports pauses."""
    for service, url in hardened.metrics.items():
        frozen = metric(url, "lastmile_gc_frozen_objects")
        assert frozen is not None and frozen > 10_000, service
        assert metric(url, "lastmile_gc_pause_seconds_count", {"generation": "2"}) is not None


def test_backlogs_of_dispatch(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["dispatch"]
    # Everything written was relayed: the outbox backlog drains to nothing.
    wait_until(
        lambda: metric(url, "lastmile_dispatch_outbox_backlog_rows") == 0,
        TIMEOUT_S,
        what="the outbox backlog to drain",
    )
    assert metric(url, "lastmile_dispatch_outbox_oldest_seconds") is not None
    assert metric(url, "lastmile_webhook_deliveries", {"state": "dead"}) == 0


def test_road_calls(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["tracking"]  # snapping and ETAs
    assert (metric(url, "lastmile_roads_calls_total", {"outcome": "ok"}) or 0) >= 1
    assert (metric(url, "lastmile_roads_calls_total", {"outcome": "error"}) or 0) == 0


def test_dispatch_decisions(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["dispatch"]
    name = "lastmile_dispatch_decisions_total"
    assert (metric(url, name, {"kind": "split", "result": "internal"}) or 0) >= 1
    assert (metric(url, name, {"kind": "assign", "result": "assigned"}) or 0) >= 1


def test_proof_checks(hardened: Hardened, traffic: Tenant) -> None:
    url = hardened.metrics["pod"]
    for check in ("object_exists", "sha256", "content_is_image", "address_distance"):
        passed = metric(
            url, "lastmile_pod_proof_checks_total", {"check": check, "result": "passed"}
        )
        assert (passed or 0) >= 1, check
    assert (metric(url, "lastmile_pod_proofs_total", {"outcome": "accepted"}) or 0) >= 1
