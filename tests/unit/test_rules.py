"""The provider rules engine: validation, deterministic splits by share, priorities, order
kinds, fallbacks, and the explanation of each decision."""

from __future__ import annotations

import pytest
from lastmile.dispatch.v1 import dispatch_pb2

from core.errors import InvalidArgument
from dispatch import rules
from dispatch.rules import EXTERNAL, INTERNAL, Rule

INSTANT = dispatch_pb2.ORDER_KIND_INSTANT
PLANNED = dispatch_pb2.ORDER_KIND_PLANNED
IDS = [f"ord_{i:04d}" for i in range(2000)]


def _half_half() -> list[Rule]:
    return [
        Rule(1, EXTERNAL, "alpha", 50, fallback_provider_id="beta"),
        Rule(1, EXTERNAL, "beta", 50),
        Rule(2, INTERNAL, "", 100),
    ]


def test_bucket_is_stable_and_spread() -> None:
    assert rules.bucket("ord_1") == rules.bucket("ord_1")
    counts = [0] * 100
    for order_id in IDS:
        counts[rules.bucket(order_id)] += 1
    assert min(counts) > 0  # every bucket is reachable


def test_split_follows_shares_deterministically() -> None:
    decisions = [rules.split(i, PLANNED, "a1", _half_half(), {"alpha", "beta"}) for i in IDS]
    again = [rules.split(i, PLANNED, "a1", _half_half(), {"alpha", "beta"}) for i in IDS]
    assert decisions == again
    alpha = sum(d.provider_id == "alpha" for d in decisions)
    assert 0.45 < alpha / len(IDS) < 0.55
    for order_id, decision in zip(IDS, decisions, strict=True):
        expected = "alpha" if rules.bucket(order_id) < 50 else "beta"
        assert decision.provider_id == expected and decision.fleet == EXTERNAL
        assert f"bucket {rules.bucket(order_id)}" in decision.explanation
        assert "alpha 0-49, provider beta 50-99" in decision.explanation


def test_unavailable_provider_uses_fallback_then_next_priority() -> None:
    alpha_ids = [i for i in IDS if rules.bucket(i) < 50][:5]
    for order_id in alpha_ids:
        fallback = rules.split(order_id, PLANNED, "a1", _half_half(), {"beta"})
        assert fallback.provider_id == "beta"
        assert "provider alpha unavailable; fallback -> provider beta" in fallback.explanation
        nothing = rules.split(order_id, PLANNED, "a1", _half_half(), set())
        assert (nothing.fleet, nothing.provider_id) == (INTERNAL, "")
        assert "priority 2" in nothing.explanation


def test_no_area_or_no_rules_means_internal() -> None:
    assert rules.split("o", PLANNED, "", _half_half(), {"alpha"}).fleet == INTERNAL
    empty = rules.split("o", PLANNED, "a1", [], set())
    assert empty.fleet == INTERNAL and "no rule left" in empty.explanation


def test_kind_specific_group_wins_at_its_priority() -> None:
    mixed = [
        Rule(1, EXTERNAL, "alpha", 100, order_kind=INSTANT),
        Rule(1, INTERNAL, "", 100),
    ]
    rules.validate_rules(mixed)
    assert rules.split("o", INSTANT, "a1", mixed, {"alpha"}).provider_id == "alpha"
    assert rules.split("o", PLANNED, "a1", mixed, {"alpha"}).fleet == INTERNAL


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([Rule(1, INTERNAL, "", 60), Rule(1, EXTERNAL, "alpha", 30)], "add up to 90"),
        ([Rule(1, EXTERNAL, "", 100)], "needs a provider_id"),
        ([Rule(1, INTERNAL, "alpha", 100)], "takes no provider_id"),
        ([Rule(1, 0, "", 100)], "INTERNAL or EXTERNAL"),
        ([Rule(1, INTERNAL, "", 120)], "0..100"),
    ],
)
def test_bad_rules_are_invalid_argument(bad: list[Rule], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rules.validate_rules(bad)
