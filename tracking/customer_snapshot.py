"""What a customer may see of their order: the tracking token resolved to the order, and
the full ``TrackingSnapshot`` built from PostgreSQL and the live state in Redis.

Token checks: one SELECT by the token's digest (the token itself is never stored). Unknown:
NOT_FOUND; revoked or expired: UNAUTHENTICATED; both with a fixed message that names no
order, so a wrong guess learns nothing. The driver's position is shown only while the order
is under way with that driver (TO_PICKUP..NEARBY), road-snapped and rounded.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.auth import tracking_token_digest
from core.batching import BatchLoader
from core.bus import Bus
from core.db import Database
from core.errors import InvalidArgument, NotFound, Unauthenticated
from core.geo import LatLng
from core.live_state_keys import driver_key
from core.settings import Settings
from tracking.active_orders import VISIBLE
from tracking.eta import eta_key, parse_line
from tracking.fanout import approximate

#: Statuses that end a Track stream (the contract's "final": nothing more to watch).
FINAL = frozenset(
    {
        common_pb2.ORDER_STATUS_DELIVERED,
        common_pb2.ORDER_STATUS_FAILED,
        common_pb2.ORDER_STATUS_RETURNED,
        common_pb2.ORDER_STATUS_CANCELLED,
    }
)
#: Statuses in which the customer may still edit instructions or reschedule (before pickup).
CHANGEABLE = frozenset(
    {
        common_pb2.ORDER_STATUS_PENDING,
        common_pb2.ORDER_STATUS_OFFERED,
        common_pb2.ORDER_STATUS_ASSIGNED,
        common_pb2.ORDER_STATUS_TO_PICKUP,
        common_pb2.ORDER_STATUS_AT_PICKUP,
        common_pb2.ORDER_STATUS_RESCHEDULED,
    }
)
MAX_TOKEN_CHARS = 256
NOT_FOUND_MESSAGE = "tracking link not found"
EXPIRED_MESSAGE = "tracking link expired or revoked"

# The rows :func:`check_token` reads, for a list of link digests: streams opening together,
# or a batch of a process's open links in :mod:`tracking.link_checks`.
_LINKS_BY_DIGESTS = (
    "SELECT tracking_token_digest, order_id, tracking_token_expires_at, tracking_token_revoked"
    " FROM orders WHERE tracking_token_digest = ANY($1::text[])"
)
# The orders, their status timelines and (once delivered) their latest proofs in one round
# trip: a snapshot is built for every Track stream that opens, thousands at once after a
# reconnect, and streams opening together share the query.
_SNAPSHOTS_BY_DIGESTS = (
    "SELECT o.tracking_token_digest, o.order_id, o.status,"
    " coalesce(o.driver_id, '') AS driver_id, o.drop_off_lat, o.drop_off_lng, o.drop_off_start, o.drop_off_end, o.instructions,"
    " o.tracking_token_expires_at, o.tracking_token_revoked, coalesce(d.name, '') AS driver_name,"
    " ARRAY(SELECT ROW(e.to_status, e.at, e.event_type, e.details) FROM order_events e"
    "  WHERE e.order_id = o.order_id AND e.from_status <> e.to_status ORDER BY e.sequence)"
    " AS timeline,"
    " CASE WHEN o.status = $2 THEN (SELECT p.proof_id FROM proofs p"
    "  WHERE p.order_id = o.order_id ORDER BY p.confirmed_at DESC LIMIT 1) END AS proof_id"
    " FROM orders o LEFT JOIN drivers d ON d.driver_id = o.driver_id"
    " WHERE o.tracking_token_digest = ANY($1::text[])"
)
_DRIVER_FIELDS = ("snapped_lat", "snapped_lng", "lat", "lng", "heading", "position_at")
_ETA_FIELDS = ("eta_ms", "line")


@dataclass(frozen=True, slots=True)
class TrackedOrder:
    """The order behind a valid tracking token."""

    order_id: str
    row: dict[str, Any]


def _stamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _check_shape(token: str) -> None:
    """INVALID_ARGUMENT without a token; NOT_FOUND for one no link can have (too long)."""
    if not token:
        raise InvalidArgument("tracking_token is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise NotFound(NOT_FOUND_MESSAGE)


def checked_order(row: Any, now: dt.datetime) -> TrackedOrder:
    """:func:`check_token` of a row read by a link's digest (None: no such link)."""
    return check_token(dict(row) if row else None, now)


async def read_links(database: Database, digests: list[str]) -> dict[str, Any]:
    """The link rows of these digests, by digest (unknown ones absent), in one query."""
    async with database.pool.acquire() as conn:
        rows = await conn.fetch(_LINKS_BY_DIGESTS, digests)
    return {row["tracking_token_digest"]: row for row in rows}


def check_token(row: dict[str, Any] | None, now: dt.datetime) -> TrackedOrder:
    """The order of a token's row; NotFound / Unauthenticated as in the module docstring."""
    if row is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    expires = row["tracking_token_expires_at"]
    if row["tracking_token_revoked"] or (expires is not None and expires <= now):
        raise Unauthenticated(EXPIRED_MESSAGE)
    return TrackedOrder(row["order_id"], row)


class SnapshotBuilder:
    """Resolves tokens and builds snapshots; see the module docstring.

    Each of its three reads (a link, an order's side, the live state) goes through a
    :class:`core.batching.BatchLoader`: streams opening together share round trips, up to
    ``track_snapshot_batch`` a query, one query of each kind at a time per process.
    """

    def __init__(self, settings: Settings, bus: Bus, database: Database) -> None:
        self._decimals = settings.customer_position_decimals
        self._bus = bus
        self._database = database
        batch = settings.track_snapshot_batch
        self._links = BatchLoader(self._links_by_digest, batch)
        self._orders = BatchLoader(self._orders_by_digest, batch)
        self._live = BatchLoader(self._live_by_order, batch)

    async def resolve(self, token: str) -> TrackedOrder:
        """The order a tracking token opens."""
        _check_shape(token)
        row = await self._links.load(tracking_token_digest(token))
        return checked_order(row, dt.datetime.now(dt.UTC))

    async def current(self, token: str) -> tuple[TrackedOrder, tracking_pb2.TrackingSnapshot]:
        """The token's order and everything the customer sees of it right now: the token
        check and the order's side in one query, then the live state."""
        _check_shape(token)
        row = await self._orders.load(tracking_token_digest(token))
        order = checked_order(row, dt.datetime.now(dt.UTC))
        snapshot = _order_side(order)
        if snapshot.status in VISIBLE and order.row["driver_id"]:
            live = await self._live.load((order.row["driver_id"], order.order_id))
            if live is not None:
                self._fill_live(snapshot, *live)
        return order, snapshot

    async def _links_by_digest(self, digests: list[str]) -> dict[str, Any]:
        return await read_links(self._database, digests)

    async def _orders_by_digest(self, digests: list[str]) -> dict[str, Any]:
        async with self._database.pool.acquire() as conn:
            rows = await conn.fetch(
                _SNAPSHOTS_BY_DIGESTS, digests, common_pb2.ORDER_STATUS_DELIVERED
            )
        return {row["tracking_token_digest"]: row for row in rows}

    async def _live_by_order(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[list[Any], list[Any]]]:
        """The driver's live fields and the order's ETA fields, per (driver, order)."""
        pipe = self._bus.redis.pipeline(transaction=False)
        for driver_id, order_id in keys:
            pipe.hmget(driver_key(driver_id), _DRIVER_FIELDS)
            pipe.hmget(eta_key(order_id), _ETA_FIELDS)
        replies = await pipe.execute()
        return {key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)}

    def _fill_live(
        self, snapshot: tracking_pb2.TrackingSnapshot, driver: list[Any], eta: list[Any]
    ) -> None:
        (slat, slng, lat, lng, heading, at_ms), (eta_ms, line) = driver, eta
        if (slat and slng) or (lat and lng):
            exact = (
                LatLng(float(slat), float(slng))
                if slat and slng
                else LatLng(float(lat), float(lng))
            )
            shown = approximate(exact, self._decimals)
            snapshot.driver_position.lat, snapshot.driver_position.lng = shown.lat, shown.lng
            snapshot.driver_heading_deg = float(heading or 0)
            if at_ms:
                snapshot.position_at.FromMilliseconds(int(at_ms))
        if eta_ms:
            snapshot.eta.FromMilliseconds(int(eta_ms))
        for point in parse_line(line):
            snapshot.route_line.add(lat=point.lat, lng=point.lng)


def _order_side(order: TrackedOrder) -> tracking_pb2.TrackingSnapshot:
    """The snapshot's fields from the order's row with its timeline and proof."""
    row = order.row
    status = int(row["status"])
    snapshot = tracking_pb2.TrackingSnapshot(
        order_id=order.order_id,
        status=status,  # type: ignore[arg-type]
        destination=common_pb2.LatLng(lat=row["drop_off_lat"], lng=row["drop_off_lng"]),
        driver_name=(row["driver_name"].split() or [""])[0],
        changes_allowed=status in CHANGEABLE,
    )
    _fill_window(snapshot, row)
    instructions = json.loads(row["instructions"] or "{}")
    json_format.ParseDict(instructions, snapshot.instructions, ignore_unknown_fields=True)
    for to_status, at, event_type, details in row["timeline"]:
        snapshot.timeline.add(
            status=to_status,
            at=_stamp(at),
            failure_reason=int(json.loads(details or "{}").get("failure_reason", 0)),
            detail=event_type,
        )
    if row["proof_id"]:
        snapshot.proof_id = row["proof_id"]
    return snapshot


def _fill_window(snapshot: tracking_pb2.TrackingSnapshot, row: dict[str, Any]) -> None:
    if row["drop_off_start"] is not None:
        snapshot.window.start.CopyFrom(_stamp(row["drop_off_start"]))
    if row["drop_off_end"] is not None:
        snapshot.window.end.CopyFrom(_stamp(row["drop_off_end"]))
