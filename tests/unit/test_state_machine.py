"""The order state machine: every allowed transition passes, every other pair is refused with
FailedPrecondition naming both statuses."""

from __future__ import annotations

import itertools

import pytest
from lastmile.common.v1 import common_pb2

from core.errors import FailedPrecondition
from dispatch import state_machine as sm

ALL = [v for v in common_pb2.OrderStatus.values() if v != common_pb2.ORDER_STATUS_UNSPECIFIED]
S = common_pb2
EXPECTED = {
    (S.ORDER_STATUS_PENDING, S.ORDER_STATUS_OFFERED),
    (S.ORDER_STATUS_PENDING, S.ORDER_STATUS_ASSIGNED),
    (S.ORDER_STATUS_PENDING, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_PENDING, S.ORDER_STATUS_CANCELLED),
    (S.ORDER_STATUS_OFFERED, S.ORDER_STATUS_PENDING),
    (S.ORDER_STATUS_OFFERED, S.ORDER_STATUS_ASSIGNED),
    (S.ORDER_STATUS_OFFERED, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_OFFERED, S.ORDER_STATUS_CANCELLED),
    (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_PENDING),
    (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_TO_PICKUP),
    (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_CANCELLED),
    (S.ORDER_STATUS_TO_PICKUP, S.ORDER_STATUS_PENDING),
    (S.ORDER_STATUS_TO_PICKUP, S.ORDER_STATUS_AT_PICKUP),
    (S.ORDER_STATUS_TO_PICKUP, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_TO_PICKUP, S.ORDER_STATUS_CANCELLED),
    (S.ORDER_STATUS_AT_PICKUP, S.ORDER_STATUS_PICKED_UP),
    (S.ORDER_STATUS_AT_PICKUP, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_AT_PICKUP, S.ORDER_STATUS_CANCELLED),
    (S.ORDER_STATUS_PICKED_UP, S.ORDER_STATUS_NEARBY),
    (S.ORDER_STATUS_PICKED_UP, S.ORDER_STATUS_DELIVERED),
    (S.ORDER_STATUS_PICKED_UP, S.ORDER_STATUS_FAILED),
    (S.ORDER_STATUS_NEARBY, S.ORDER_STATUS_DELIVERED),
    (S.ORDER_STATUS_NEARBY, S.ORDER_STATUS_FAILED),
    (S.ORDER_STATUS_FAILED, S.ORDER_STATUS_PICKED_UP),
    (S.ORDER_STATUS_FAILED, S.ORDER_STATUS_RESCHEDULED),
    (S.ORDER_STATUS_FAILED, S.ORDER_STATUS_RETURNED),
    (S.ORDER_STATUS_RESCHEDULED, S.ORDER_STATUS_PENDING),
    (S.ORDER_STATUS_RESCHEDULED, S.ORDER_STATUS_OFFERED),
    (S.ORDER_STATUS_RESCHEDULED, S.ORDER_STATUS_ASSIGNED),
    (S.ORDER_STATUS_RESCHEDULED, S.ORDER_STATUS_RETURNED),
    (S.ORDER_STATUS_RESCHEDULED, S.ORDER_STATUS_CANCELLED),
}


def test_table_is_exactly_the_expected_transitions() -> None:
    table = {(a, b) for a, nexts in sm.TRANSITIONS.items() for b in nexts}
    assert table == EXPECTED
    assert set(sm.TRANSITIONS) == set(ALL)


@pytest.mark.parametrize(("current", "target"), sorted(EXPECTED))
def test_allowed_transition_passes(current: int, target: int) -> None:
    sm.check_transition(current, target)
    assert sm.allowed(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [pair for pair in itertools.product([0, *ALL], [0, *ALL]) if pair not in EXPECTED],
)
def test_every_other_pair_is_refused_naming_both(current: int, target: int) -> None:
    with pytest.raises(FailedPrecondition) as info:
        sm.check_transition(current, target)
    assert sm.name(current) in str(info.value)
    assert sm.name(target) in str(info.value)
    assert not sm.allowed(current, target)


def test_final_and_cancellable_sets() -> None:
    assert {sm.DELIVERED, sm.RETURNED, sm.CANCELLED} == sm.FINAL
    assert {
        sm.PENDING,
        sm.OFFERED,
        sm.ASSIGNED,
        sm.TO_PICKUP,
        sm.AT_PICKUP,
        sm.RESCHEDULED,
    } == sm.CANCELLABLE
    with pytest.raises(FailedPrecondition, match="final status"):
        sm.check_transition(sm.DELIVERED, sm.CANCELLED)


def test_forward_path_walks_skipped_steps_and_skips_the_past() -> None:
    assert sm.forward_path(sm.ASSIGNED, sm.PICKED_UP) == [sm.TO_PICKUP, sm.AT_PICKUP, sm.PICKED_UP]
    assert sm.forward_path(sm.PENDING, sm.DELIVERED) == [
        sm.ASSIGNED,
        sm.TO_PICKUP,
        sm.AT_PICKUP,
        sm.PICKED_UP,
        sm.DELIVERED,
    ]
    assert sm.forward_path(sm.AT_PICKUP, sm.AT_PICKUP) == []
    assert sm.forward_path(sm.PICKED_UP, sm.AT_PICKUP) is None  # a replayed, older report
    assert sm.forward_path(sm.DELIVERED, sm.NEARBY) is None
    assert sm.forward_path(sm.CANCELLED, sm.PICKED_UP) is None
    for current, target in itertools.product(ALL, ALL):
        path = sm.forward_path(current, target)
        for a, b in itertools.pairwise([current, *(path or [])]):
            assert sm.allowed(a, b)
