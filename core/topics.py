"""Names of every Redis stream and pub/sub channel the services share: the bus's contract.

Payloads are serialized protobuf messages from ``protos/`` (field ``data``), plus a few plain
fields named where each topic is defined. Producers and consumers import the names from here.
"""

from __future__ import annotations

import zlib

# --- durable streams (XADD / consumer groups) ---------------------------------------------


def ping_stream(shard: int) -> str:
    """Driver location batches of one shard (gateway -> tracking processors).

    Fields: ``driver`` (id), ``tenant`` (the driver token's tenant), ``seq`` (the driver's
    event sequence number), ``data`` (lastmile.driver.v1.LocationBatch), ``received_ms``
    (gateway receive time, epoch ms).
    """
    return f"lastmile:pings:{shard}"


def shard_of(driver_id: str, shards: int) -> int:
    """The ping shard of a driver: stable across processes and restarts."""
    return zlib.crc32(driver_id.encode()) % shards


#: Ping shard entries the tracking processor could not read, kept for inspection and replay
#: (tracking/dead_letters.py). Fields: the entry's own, plus ``dead_stream`` and ``dead_entry``
#: (where it was) and ``dead_error`` (why it could not be read).
PING_DEAD_LETTERS = "lastmile:pings-dead"

#: Driver events other than locations (status, stop events, offer answers, failed attempts,
#: route acks). Fields: ``driver``, ``tenant``, ``seq``, ``data``
#: (lastmile.driver.v1.ConnectRequest).
DRIVER_EVENTS = "lastmile:driver-events"

#: Geofence transitions (tracking -> dispatch, watchers). Fields: ``data``
#: (lastmile.tracking.v1.GeofenceEvent), ``tenant`` (the fence's tenant: watchers see only
#: their own).
GEOFENCE_EVENTS = "lastmile:geofence-events"

#: Order events relayed from the outbox (dispatch -> everyone). Fields: ``order``, ``data``
#: (lastmile.dispatch.v1.OrderEvent).
ORDER_EVENTS = "lastmile:order-events"

#: Confirmed proofs of delivery relayed from the outbox (pod -> dispatch, which delivers the
#: order). Fields: ``order`` (the outbox key: order id), ``data`` (lastmile.pod.v1.Proof).
PROOF_EVENTS = "lastmile:proof-events"

#: Drivers who left their route's planned geometry for longer than the threshold (tracking ->
#: dispatch, which pushes a recomputed version). Fields: ``driver``, ``data``
#: (lastmile.tracking.v1.OffRouteEvent).
OFF_ROUTE_EVENTS = "lastmile:off-route-events"

# --- live fan-out (PUBLISH / SUBSCRIBE) ----------------------------------------------------


def order_channel(order_id: str) -> str:
    """Updates for customers tracking one order (payload: lastmile.tracking.v1.TrackResponse)."""
    return f"lastmile:order:{order_id}"


#: Orders whose tracking link was revoked or replaced (dispatch -> every tracking process, which
#: re-checks the links of that order's open Track streams at once). Payload: the order id.
TRACKING_LINKS = "lastmile:tracking-links"

#: Tenants whose tracking intervals changed (tracking's FleetService -> every gateway, which
#: re-sends the config to that tenant's connected apps). Payload: the tenant id.
TRACKING_INTERVALS = "lastmile:tracking-intervals"


def fleet_channel(tenant_id: str) -> str:
    """Driver state changes of one tenant's drivers, for its dispatchers' views (payload:
    lastmile.tracking.v1.WatchFleetResponse). One channel per tenant, so a dashboard never
    receives another tenant's drivers."""
    return f"lastmile:fleet:{tenant_id}"


def driver_commands_channel(driver_id: str) -> str:
    """Commands for one connected driver, whichever gateway holds its stream
    (payload: lastmile.driver.v1.ConnectResponse)."""
    return f"lastmile:driver:{driver_id}:commands"
