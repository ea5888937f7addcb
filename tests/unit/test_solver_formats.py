"""The Solomon and Li & Lim readers on the real shared benchmark files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.solver.formats import FormatError, load_instance, parse_solomon
from dispatch.solver.model import NodeKind, Objective

VRP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vrp"


def test_solomon_c101_is_read_with_depot_fleet_and_windows() -> None:
    problem = load_instance(VRP / "solomon" / "C101.txt")
    assert problem.name == "C101"
    assert len(problem.nodes) == 101
    assert len(problem.vehicles) == 25 and problem.vehicles[0].capacity == 200
    depot, first = problem.nodes[0], problem.nodes[1]
    assert depot.kind is NodeKind.DEPOT and depot.due == 1236
    assert (first.external_id, first.amount, first.ready, first.due, first.service) == (
        1,
        10,
        912,
        967,
        90,
    )
    assert problem.distance[0, 1] == pytest.approx((5**2 + 18**2) ** 0.5, rel=1e-15)
    assert problem.objective is Objective.TRUNCATED_DISTANCE
    assert not problem.has_pairs


def test_li_lim_lc101_pairs_point_at_each_other() -> None:
    problem = load_instance(VRP / "li_lim_100" / "lc101.txt")
    assert problem.has_pairs and problem.objective is Objective.DISTANCE
    assert problem.vehicles[0].capacity == 200
    kinds = [n.kind for n in problem.nodes[1:]]
    assert kinds.count(NodeKind.PICKUP) == kinds.count(NodeKind.DELIVERY) > 0
    for node in problem.nodes:
        if node.kind is NodeKind.PICKUP:
            assert node.sibling is not None
            delivery = problem.nodes[node.sibling]
            assert delivery.kind is NodeKind.DELIVERY
            assert problem.nodes[delivery.sibling or 0] == node
            assert delivery.amount == node.amount


def test_every_shared_instance_parses() -> None:
    files = sorted(VRP.glob("*/*.txt"))
    assert len(files) >= 72
    for path in files:
        problem = load_instance(path)
        assert problem.nodes[0].kind is NodeKind.DEPOT
        assert len(problem.nodes) > 100


def test_junk_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        parse_solomon("hello\nworld\n", "junk")
