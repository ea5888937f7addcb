"""Checks of client values shared by the services: NUL characters anywhere in a request's
text, timestamps outside what protobuf and datetime can hold, enum numbers the contracts do
not define."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import dispatch_pb2, order_service_pb2
from lastmile.origin.v1 import origin_pb2
from lastmile.pod.v1 import pod_service_pb2
from lastmile.tracking.v1 import fleet_service_pb2

from core.errors import InvalidArgument
from core.inputs import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP_S,
    MIN_TIMESTAMP_S,
    check_position,
    check_text,
    client_datetime,
    client_range,
    client_seconds,
    enum_problem,
    enum_values,
    position_problem,
    text_problem,
)


def test_clean_text_passes() -> None:
    order = dispatch_pb2.Order(order_id="ord-1", external_ref="é 😀 ' OR 1=1")
    order.drop_off_address.line1 = "Triq il-Kbira"
    request = order_service_pb2.CreateOrderRequest(idempotency_key="k", order=order)
    assert text_problem(request) is None
    check_text(request)


def test_nul_is_found_in_nested_repeated_and_map_fields() -> None:
    order = dispatch_pb2.Order(order_id="ord-1")
    order.drop_off_address.line1 = "a\x00b"
    assert text_problem(order_service_pb2.CreateOrderRequest(order=order)) == (
        "order.drop_off_address.line1 must not contain NUL characters"
    )
    listed = order_service_pb2.WatchOrdersRequest(order_ids=["a", "b\x00"])
    assert text_problem(listed) == "order_ids must not contain NUL characters"
    upload = pod_service_pb2.CreateUploadUrlResponse()
    upload.form_fields["key"] = "\x00"
    assert text_problem(upload) == "form_fields must not contain NUL characters"
    with pytest.raises(InvalidArgument, match="order_ids must not contain NUL characters"):
        check_text(listed)


def test_an_empty_entry_in_a_list_of_ids_is_named() -> None:
    listed = order_service_pb2.WatchOrdersRequest(order_ids=["a", "", "b"])
    assert text_problem(listed) == "order_ids[1] is empty"
    assert text_problem(order_service_pb2.WatchOrdersRequest(order_ids=["a", "b"])) is None


def test_over_long_text_is_refused_ids_sooner_than_other_text() -> None:
    order = dispatch_pb2.Order(customer_name="x" * MAX_TEXT_CHARS)
    order.drop_off_address.line1 = "y" * MAX_TEXT_CHARS
    request = order_service_pb2.CreateOrderRequest(idempotency_key="k" * MAX_ID_CHARS, order=order)
    assert text_problem(request) is None
    order.drop_off_address.line1 += "y"
    request = order_service_pb2.CreateOrderRequest(order=order)
    assert text_problem(request) == (
        f"order.drop_off_address.line1 is longer than {MAX_TEXT_CHARS} characters"
        f" ({MAX_TEXT_CHARS + 1})"
    )
    listed = order_service_pb2.WatchOrdersRequest(order_ids=["a", "b" * (MAX_ID_CHARS + 1)])
    assert text_problem(listed) == (
        f"order_ids is longer than {MAX_ID_CHARS} characters ({MAX_ID_CHARS + 1})"
    )
    keyed = order_service_pb2.CreateOrderRequest(idempotency_key="k" * (MAX_ID_CHARS + 1))
    with pytest.raises(InvalidArgument, match=f"^idempotency_key is longer than {MAX_ID_CHARS}"):
        check_text(keyed)


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (MAX_TIMESTAMP_S + 1, 0, "at is outside the years 1 to 9999"),
        (MIN_TIMESTAMP_S - 1, 0, "at is outside the years 1 to 9999"),
        (2**63 - 1, 0, "at is outside the years 1 to 9999"),
        (0, -1, "at.nanos must be within 0..999999999"),
        (0, 1_000_000_000, "at.nanos must be within 0..999999999"),
    ],
)
def test_timestamps_out_of_range_are_invalid_arguments(
    seconds: int, nanos: int, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client_datetime(Timestamp(seconds=seconds, nanos=nanos), "at")
    assert str(caught.value) == message


def test_timestamps_in_range_convert() -> None:
    assert client_datetime(Timestamp(seconds=0, nanos=5000), "at") == dt.datetime(
        1970, 1, 1, 0, 0, 0, 5, tzinfo=dt.UTC
    )
    assert client_datetime(Timestamp(seconds=MAX_TIMESTAMP_S), "at").year == 9999
    assert client_datetime(Timestamp(seconds=MIN_TIMESTAMP_S), "at").year == 1


def test_enum_numbers_outside_the_contract_are_named() -> None:
    status = common_pb2.OrderStatus.DESCRIPTOR
    assert enum_problem(common_pb2.ORDER_STATUS_DELIVERED, status, "s") is None
    assert enum_problem(32768, status, "statuses") == "statuses: 32768 is not a OrderStatus"
    assert enum_problem(-1, status, "s") == "s: -1 is not a OrderStatus"
    assert enum_problem(0, status, "s") == "s is unspecified"
    kind = origin_pb2.OriginKind.DESCRIPTOR
    assert enum_problem(0, kind, "origin.kind", unset_ok=True) is None
    assert (
        enum_problem(9, kind, "origin.kind", unset_ok=True) == "origin.kind: 9 is not a OriginKind"
    )


def test_repeated_enum_values_are_all_checked() -> None:
    status = common_pb2.OrderStatus.DESCRIPTOR
    known = [common_pb2.ORDER_STATUS_DELIVERED, common_pb2.ORDER_STATUS_PENDING]
    assert enum_values([*known, known[0]], status, "statuses") == frozenset(known)
    assert enum_values([], status, "statuses") == frozenset()
    with pytest.raises(InvalidArgument, match="statuses: 32768 is not a OrderStatus"):
        enum_values([*known, 32768], status, "statuses")
    with pytest.raises(InvalidArgument, match="statuses is unspecified"):
        enum_values([0], status, "statuses")


def test_durations_are_read_without_overflow_and_malformed_ones_refused() -> None:
    assert client_seconds(Duration(seconds=90, nanos=500_000_000), "d") == 90.5
    assert client_seconds(Duration(seconds=-2, nanos=-500_000_000), "d") == -2.5
    # protobuf's ToTimedelta overflows here; the check reads the fields.
    assert client_seconds(Duration(seconds=2**63 - 1), "d") > 9e18
    for bad in (Duration(seconds=1, nanos=-1), Duration(nanos=1_000_000_000)):
        with pytest.raises(InvalidArgument, match="max_drive is not a valid Duration"):
            client_seconds(bad, "max_drive")


@pytest.mark.parametrize(
    ("lat", "lng", "why"),
    [
        (math.nan, 14.5, "finite"),
        (35.9, -math.inf, "finite"),
        (90.5, 14.5, "out of range"),
        (35.9, 180.000001, "out of range"),
    ],
)
def test_positions_off_the_globe_are_named(lat: float, lng: float, why: str) -> None:
    problem = position_problem(lat, lng, "stop.position")
    assert problem is not None and problem.startswith("stop.position") and why in problem
    with pytest.raises(InvalidArgument, match=r"^stop\.position"):
        check_position(lat, lng, "stop.position")


def test_positions_on_the_globe_pass_including_its_edges() -> None:
    for lat, lng in ((35.9, 14.5), (-90.0, -180.0), (90.0, 180.0), (0.0, 0.0)):
        assert position_problem(lat, lng, "p") is None
        check_position(lat, lng, "p")


def _path_request(start_s: int | None, end_s: int | None) -> fleet_service_pb2.GetDriverPathRequest:
    request = fleet_service_pb2.GetDriverPathRequest(driver_id="d")
    if start_s is not None:
        request.start.seconds = start_s
    if end_s is not None:
        request.end.seconds = end_s
    return request


@pytest.mark.parametrize(
    ("start_s", "end_s", "longest", "message"),
    [
        (None, 100, dt.timedelta(hours=1), "start and end are required"),
        (100, 100, dt.timedelta(hours=1), "end must be after start"),
        (0, 86_401, dt.timedelta(hours=24), "may span at most 24 hours"),
        (0, 93 * 86_400, dt.timedelta(days=92), "may span at most 92 days"),
    ],
)
def test_a_time_range_says_what_is_wrong(
    start_s: int | None, end_s: int | None, longest: dt.timedelta, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        client_range(_path_request(start_s, end_s), longest)


def test_a_time_range_converts_to_aware_datetimes() -> None:
    start, end = client_range(_path_request(0, 3600), dt.timedelta(hours=1))

    assert (start, end - start) == (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.timedelta(hours=1))
