"""Simulated origins answer like real ones through OriginService: a short simulation (the
smoke city, more kitchens' rejections, short preparations) against the real platform leaves
accepted, rejected and ready decisions in the order histories."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2, order_service_pb2_grpc
from simulator.city import City
from simulator.connection import Connection, addresses_of
from simulator.run import Simulation
from simulator.scenario import load, validate

from core.auth import Role, issue_token
from core.geo import LatLng
from core.roads import RoadNetwork
from tests.integration.conftest import REPO, Platform

pytestmark = pytest.mark.integration


Metadata = tuple[tuple[str, str], ...]
Desk = tuple[order_service_pb2_grpc.OrderServiceStub, Metadata]


@pytest.fixture
def desk(platform: Platform) -> Iterator[Desk]:
    token = issue_token(platform.settings, "origin-test-desk", Role.DISPATCHER, "sim")
    with grpc.insecure_channel(platform.addresses["dispatch"]) as channel:
        yield (
            order_service_pb2_grpc.OrderServiceStub(channel),
            (("authorization", f"Bearer {token}"),),
        )


async def test_simulated_origins_accept_reject_and_mark_ready(
    platform: Platform,
    roads: RoadNetwork,
    desk: Desk,
) -> None:
    smoke = load(REPO / "scenarios" / "smoke.toml")
    scenario = validate(
        dataclasses.replace(
            smoke,
            name="origins",
            seed=11,
            drain_s=90.0,
            orders=dataclasses.replace(smoke.orders, max_orders=6),
            origins=dataclasses.replace(
                smoke.origins, reject_rate=0.4, prep_min_s=60.0, prep_max_s=150.0, api=True
            ),
        )
    )
    city = City(roads, LatLng(*scenario.center), scenario.radius_m)
    connection = Connection(
        platform.settings, addresses_of(platform.settings, platform.edge_address), scenario.tenant
    )
    try:
        recorder = await Simulation(scenario, connection, city).run()
    finally:
        connection.close()

    assert recorder.steps.get("origin_watch") == "done", recorder.steps
    counts = recorder.counts
    assert counts["origin_orders_seen"] == len(recorder.orders) == 6, recorder.notes
    assert counts["origin_rejections"] >= 1 and counts["origin_accepts"] >= 1, counts
    assert counts["origin_accepts"] + counts["origin_rejections"] == 6
    stub, metadata = desk
    decisions: dict[str, list[str]] = {}
    for order_id, record in recorder.orders.items():
        request = order_service_pb2.ListOrderEventsRequest(order_id=order_id)
        history = list(stub.ListOrderEvents(request, metadata=metadata).events)
        decisions[order_id] = [e.event_type for e in history if e.event_type.startswith("origin_")]
        kitchen = f"origin:{record.origin_id}"
        assert {e.actor for e in history if e.event_type.startswith("origin_")} <= {kitchen}
        if record.outcome == "cancelled":
            assert decisions[order_id] == ["origin_rejected"]
            assert history[-1].to_status == common_pb2.ORDER_STATUS_CANCELLED
            assert json.loads(history[-1].details_json)["origin_reason"] == "kitchen too busy"
        else:
            # Accepted with the drawn preparation, ready once it was over, then picked up.
            assert decisions[order_id][:2] == ["origin_accepted", "origin_ready"], history
            accepted = next(e for e in history if e.event_type == "origin_accepted")
            preparation = json.loads(accepted.details_json)["preparation_s"]
            # 60-150 simulated seconds at the scenario's speed, in wall seconds (rounded up).
            assert 2 <= preparation <= 150 / scenario.speed + 1
            types = [e.event_type for e in history]
            if "picked_up" in types:
                assert types.index("origin_ready") < types.index("picked_up")
    flat = [d for ds in decisions.values() for d in ds]
    assert {"origin_accepted", "origin_rejected", "origin_ready"} <= set(flat), decisions
