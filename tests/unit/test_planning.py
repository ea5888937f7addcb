"""Wave planning on the real Malta road graph (the session's ``roads`` fixture)."""

from __future__ import annotations

from core.geo import LatLng
from core.roads import RoadNetwork
from dispatch.planning import WaveDriver, WaveOrder, group_orders, plan_wave
from dispatch.solver.model import NodeKind

VALLETTA = LatLng(35.8989, 14.5146)
SLIEMA = LatLng(35.9122, 14.5042)
MSIDA = LatLng(35.8925, 14.4894)
GZIRA = LatLng(35.9058, 14.4881)
PAOLA = LatLng(35.8731, 14.5075)
BIRKIRKARA = LatLng(35.8972, 14.4611)
DAY = (0.0, 8 * 3600.0)


def _orders() -> list[WaveOrder]:
    return [
        WaveOrder("drop-1", "harbour", SLIEMA, DAY),
        WaveOrder("drop-2", "harbour", PAOLA, DAY),
        WaveOrder("drop-3", "harbour", BIRKIRKARA, (0.0, 2 * 3600.0)),
        WaveOrder("pair-1", "harbour", GZIRA, DAY, pickup=MSIDA, pickup_window=(0.0, 3600.0)),
        WaveOrder("pair-2", "harbour", VALLETTA, DAY, pickup=BIRKIRKARA, units=2),
    ]


def _drivers() -> list[WaveDriver]:
    return [
        WaveDriver("driver-a", VALLETTA, capacity=4, shift=DAY),
        WaveDriver("driver-b", MSIDA, capacity=4, shift=DAY),
    ]


def test_every_order_is_planned_with_pickups_before_drop_offs(roads: RoadNetwork) -> None:
    plan = plan_wave(roads, _orders(), _drivers(), time_limit_s=1.0)
    assert plan.unassigned == []
    planned = [stop for route in plan.routes for stop in route.stops]
    assert sorted({s.order_id for s in planned}) == sorted(o.order_id for o in _orders())
    for route in plan.routes:
        kinds = [(s.order_id, s.kind) for s in route.stops]
        for order_id in ("pair-1", "pair-2"):
            if (order_id, NodeKind.PICKUP) in kinds:
                assert kinds.index((order_id, NodeKind.PICKUP)) < kinds.index(
                    (order_id, NodeKind.DELIVERY)
                )


def test_an_order_nobody_can_reach_in_time_comes_back_unassigned(roads: RoadNetwork) -> None:
    impossible = WaveOrder("too-soon", "harbour", BIRKIRKARA, (0.0, 5.0))  # 5 s after start
    plan = plan_wave(roads, [*_orders(), impossible], _drivers(), time_limit_s=1.0)
    assert plan.unassigned == ["too-soon"]


def test_orders_are_grouped_by_area_and_window_bucket() -> None:
    orders = [
        WaveOrder("late", "north", SLIEMA, (7200.0, 9000.0)),
        WaveOrder("early-south", "south", PAOLA, (0.0, 3600.0)),
        WaveOrder("early-north", "north", GZIRA, (600.0, 3600.0)),
    ]
    groups = [[o.order_id for o in group] for group in group_orders(orders, 3600.0)]
    assert groups == [["early-north"], ["early-south"], ["late"]]
