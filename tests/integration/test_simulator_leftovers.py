"""A simulation started again after a stopped one (simulator/leftovers.py): the earlier run's
orders nobody picked up are cancelled so that they are neither offered to the drivers, who keep
their ids, nor counted against their capacity; another scenario's orders are left alone."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import pytest
from lastmile.common.v1 import common_pb2
from simulator.cli import simulate
from simulator.clock import SimClock
from simulator.connection import Connection
from simulator.customer import Customer, Placed
from simulator.leftovers import REASON, is_leftover, order_ref
from simulator.metrics import Recorder
from simulator.scenario import Customers, Scenario, load

from core.geo import LatLng
from tests.integration.conftest import REPO, Platform

pytestmark = pytest.mark.integration
SMOKE = REPO / "scenarios" / "smoke.toml"
EARLIER_RUN = "0123abcd"


async def _place(connection: Connection, scenario: Scenario, ref: str) -> Placed:
    """An order as a run with ``ref`` placed it, not picked up by anyone."""
    lat, lng = scenario.center
    customer = Customer(
        LatLng(lat + 0.004, lng),
        Customers(),
        connection,
        SimClock(1.0),
        Recorder(),
        random.Random(ref),
        ref,
    )
    return await customer.place("", 3600.0, pickup=LatLng(lat, lng))


async def test_a_new_run_cancels_the_orders_an_earlier_run_left(
    platform: Platform, tmp_path: Path
) -> None:
    scenario = load(SMOKE)
    connection = Connection(platform.settings, platform.addresses, scenario.tenant)
    try:
        ours = await _place(connection, scenario, order_ref(scenario.name, EARLIER_RUN))
        theirs = await _place(connection, scenario, order_ref("another", EARLIER_RUN))
    finally:
        connection.close()

    summary = await simulate(
        scenario, platform.settings, platform.edge_address, tmp_path, lambda _: None
    )

    assert any(note.startswith("earlier runs left") for note in summary["notes"]), summary
    assert summary["orders"]["placed"] == scenario.orders.max_orders
    assert sum(summary["orders"]["by_outcome"].values()) == summary["orders"]["placed"]
    conn = await asyncpg.connect(platform.settings.database_url)
    try:
        status = "SELECT status FROM orders WHERE order_id = $1"
        assert await conn.fetchval(status, ours.order_id) == common_pb2.ORDER_STATUS_CANCELLED
        assert await conn.fetchval(status, theirs.order_id) == common_pb2.ORDER_STATUS_PENDING
        details = await conn.fetchval(
            "SELECT details FROM order_events WHERE order_id = $1 AND to_status = $2",
            ours.order_id,
            common_pb2.ORDER_STATUS_CANCELLED,
        )
        assert REASON in str(details)
    finally:
        await conn.close()


def test_only_other_runs_of_the_same_scenario_are_leftovers() -> None:
    this = order_ref("demo", "feedf00d")
    assert is_leftover(order_ref("demo", EARLIER_RUN), "demo", this)
    assert not is_leftover(this, "demo", this)
    for other in (order_ref("demo-large", EARLIER_RUN), "sim-0123abcd", "shop-42", ""):
        assert not is_leftover(other, "demo", this)
