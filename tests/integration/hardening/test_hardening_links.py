"""Customer tracking links: revoked at once (and re-issued) by staff, dead a grace period after
the order ends, limited per link (requests per second, open Track streams), and showing the
driver only approximately."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.dispatch.v1 import order_service_pb2

from core.geo import LatLng
from tests.helpers import wait_until
from tests.integration.customer_support import CustomerStream, sql
from tests.integration.hardening.conftest import LIMITS, Hardened
from tests.integration.hardening.support import (
    TIMEOUT_S,
    Tenant,
    drive,
    metric,
    status_of,
    under_way,
)

pytestmark = pytest.mark.integration
# Seven decimals: the customer must see it rounded (customer_position_decimals = 4).
PRECISE = LatLng(35.8971234, 14.5123456)


@pytest.fixture(scope="module")
def tenant(hardened: Hardened) -> Iterator[Tenant]:
    made = Tenant(hardened)
    yield made
    made.close()


def test_links_carry_at_least_128_random_bits(tenant: Tenant) -> None:
    tokens = {tenant.create().order.tracking_token for _ in range(3)}
    assert len(tokens) == 3
    assert all(len(t) * 6 >= 128 for t in tokens)  # URL-safe base64: 6 bits a character


def test_revoked_link_stops_at_once_and_a_new_one_works(hardened: Hardened, tenant: Tenant) -> None:
    created = tenant.create()
    order_id, token = created.order.order_id, created.order.tracking_token
    assert tenant.get_tracking(token).snapshot.order_id == order_id
    stream = CustomerStream(hardened.addresses["tracking"], token)
    try:
        stream.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
        revoke = order_service_pb2.RevokeTrackingTokenRequest(order_id=order_id)
        revoked = tenant.orders.RevokeTrackingToken(revoke, metadata=tenant.md)
        assert revoked.order.order_id == order_id and not revoked.tracking_token
        assert stream.wait_end() == "OK"  # the open stream ends by itself
    finally:
        stream.close()
    assert status_of(lambda: tenant.get_tracking(token))[0] == grpc.StatusCode.UNAUTHENTICATED
    change = order_service_pb2.UpdateInstructionsRequest(order_id=order_id, tracking_token=token)
    change.instructions.text = "leave it with the neighbour"
    refused = status_of(lambda: tenant.orders.UpdateInstructions(change))
    assert refused[0] == grpc.StatusCode.PERMISSION_DENIED
    # A new link for the same order: works; the old one stays dead.
    reissue = order_service_pb2.RevokeTrackingTokenRequest(order_id=order_id, issue_new=True)
    fresh = tenant.orders.RevokeTrackingToken(reissue, metadata=tenant.md).tracking_token
    assert fresh and fresh != token
    assert tenant.get_tracking(fresh).snapshot.order_id == order_id
    # The old link now names no order at all.
    assert status_of(lambda: tenant.get_tracking(token))[0] == grpc.StatusCode.NOT_FOUND
    # Customers cannot revoke: the RPC is for staff.
    denied = status_of(lambda: tenant.orders.RevokeTrackingToken(revoke))
    assert denied[0] == grpc.StatusCode.UNAUTHENTICATED


def test_link_dies_a_grace_period_after_the_order_ends(hardened: Hardened, tenant: Tenant) -> None:
    created = tenant.create()  # no drop-off window: before, such a link never expired
    order_id, token = created.order.order_id, created.order.tracking_token
    cancel = order_service_pb2.CancelOrderRequest(order_id=order_id, reason="test")
    tenant.orders.CancelOrder(cancel, metadata=tenant.md)
    dsn = hardened.settings.database_url
    (row,) = sql(
        dsn,
        "SELECT o.tracking_token_expires_at AS expires, e.at FROM orders o JOIN order_events e"
        " ON e.order_id = o.order_id AND e.to_status = $2 WHERE o.order_id = $1",
        order_id,
        common_pb2.ORDER_STATUS_CANCELLED,
    )
    grace = dt.timedelta(seconds=LIMITS["tracking_token_grace_s"])
    assert abs(row["expires"] - (row["at"] + grace)) < dt.timedelta(seconds=2), row

    def expired() -> bool:
        return bool(sql(dsn, "SELECT now() > $1::timestamptz AS past", row["expires"])[0]["past"])

    wait_until(expired, TIMEOUT_S, what="the grace period to pass")
    assert status_of(lambda: tenant.get_tracking(token))[0] == grpc.StatusCode.UNAUTHENTICATED


def test_customer_sees_the_driver_only_approximately(hardened: Hardened, tenant: Tenant) -> None:
    driver_id = tenant.driver()
    app = tenant.app(driver_id)
    try:
        token = under_way(tenant, app, driver_id)
        stream = CustomerStream(hardened.addresses["tracking"], token)
        try:
            stream.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
            drive(app, 2, PRECISE)
            update = stream.wait_for(lambda m: m.WhichOneof("update") == "position")
        finally:
            stream.close()
    finally:
        app.close()
    shown = update.position.position
    for value in (shown.lat, shown.lng):
        assert round(value, 4) == value  # at most 4 decimals: about 11 m
    assert (shown.lat, shown.lng) != (PRECISE.lat, PRECISE.lng)
    snapshot = tenant.get_tracking(token).snapshot
    assert round(snapshot.driver_position.lat, 4) == snapshot.driver_position.lat
    assert snapshot.driver_position.lat != 0.0


def _open_tracks(hardened: Hardened) -> float:
    url = hardened.metrics["tracking"]
    labels = {"method": "Track"}
    return metric(url, "lastmile_streams_open", labels) or 0.0


def test_track_streams_per_link_are_capped(hardened: Hardened, tenant: Tenant) -> None:
    token = tenant.create().order.tracking_token
    limit = int(LIMITS["track_max_streams_per_token"])
    streams = [CustomerStream(hardened.addresses["tracking"], token) for _ in range(limit)]
    try:
        for stream in streams:
            stream.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
        extra = CustomerStream(hardened.addresses["tracking"], token)
        ended = extra.wait_end()
        assert isinstance(ended, grpc.RpcError)
        assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another link is not affected.
        other = CustomerStream(hardened.addresses["tracking"], tenant.create().order.tracking_token)
        other.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
        other.close()
        # Closing one stream frees its place.
        streams.pop().close()
        # Every other Track stream of the package is closed by now: only ours stay open.
        wait_until(
            lambda: _open_tracks(hardened) == limit - 1, TIMEOUT_S, what="the stream to close"
        )
        again = CustomerStream(hardened.addresses["tracking"], token)
        streams.append(again)
        again.wait_for(lambda m: m.WhichOneof("update") == "snapshot")
    finally:
        for stream in streams:
            stream.close()


def test_requests_per_link_are_rate_limited(tenant: Tenant) -> None:
    token = tenant.create().order.tracking_token
    for _ in range(int(LIMITS["track_token_burst"])):
        tenant.get_tracking(token)
    code, message = status_of(lambda: tenant.get_tracking(token))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "tracking link" in message
    # Per link: another order's link still answers, and an unknown link is refused as before.
    assert tenant.get_tracking(tenant.create().order.tracking_token).snapshot.order_id
    unknown = status_of(lambda: tenant.get_tracking(uuid.uuid4().hex))[0]
    assert unknown == grpc.StatusCode.NOT_FOUND
