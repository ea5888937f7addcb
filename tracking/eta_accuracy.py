"""FleetService.GetEtaAccuracy: how far the ETAs customers saw were from the actual arrivals.

The ETA engine records every prediction (``eta_predictions``) and the order follower the
delivery (``eta_arrivals``, core/migrations/0004_eta.sql). An ETA is the driver's arrival at
the drop-off, while DELIVERED comes after the hand-over, minutes later at a block of flats: so
the actual arrival is when the driver's positions first reached the drop-off (within
``eta_arrival_radius_m``) after the pickup (:func:`record_reached`, ``eta_arrivals.reached_at``),
and the delivery time only when they never did. This report
takes the caller's tenant's orders delivered in a time range and, for each prediction made
for them before the arrival, the error: actual minus predicted arrival (positive: the driver
came later than the customer was told). Errors are summarised overall and by horizon band
(how long before the arrival the prediction was made, ``eta_accuracy_horizons_s``): an ETA
an hour out is expected to be less exact than one two minutes out, and mixing them hides
both. One query; PostgreSQL computes the percentiles.

The same errors feed the ``lastmile_eta_error_seconds`` histogram (by band) as deliveries are
recorded (:func:`score_delivered`, called by the order follower of the one process whose
insert recorded the delivery), for dashboards and the ETA bias alert.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lastmile.common.v1 import common_pb2
from lastmile.tracking.v1 import fleet_service_pb2
from prometheus_client import Histogram

from core.auth import Role, require
from core.db import Database
from core.errors import ResourceExhausted
from core.geo import M_PER_DEG_LAT
from core.inputs import client_range
from core.settings import Settings

if TYPE_CHECKING:
    from core.db import Conn

MAX_SPAN = dt.timedelta(days=92)
DELIVERED = common_pb2.ORDER_STATUS_DELIVERED
PICKED_UP = common_pb2.ORDER_STATUS_PICKED_UP
ERROR = Histogram(
    "lastmile_eta_error_seconds",
    "Actual minus predicted arrival of each ETA shown (positive: the driver came later than"
    " said), scored once when its order is delivered, by how long before the driver's arrival"
    " the ETA was shown (bands of eta_accuracy_horizons_s).",
    ["horizon"],
    buckets=(-1800, -900, -600, -300, -120, -60, 0, 60, 120, 300, 600, 900, 1800),
)

# width_bucket over the edges with 0 prepended numbers the bands from 1: band 1 holds the
# predictions made less than the first edge before the delivery, band i those from edge i-1
# to edge i, the last one those from the last edge on. The ROLLUP row (band NULL) is the
# overall summary.
_QUERY = """
WITH delivered AS NOT MATERIALIZED (
    SELECT a.order_id, coalesce(a.reached_at, a.arrived_at) AS actual_at,
           a.reached_at IS NOT NULL AS reached
    FROM eta_arrivals a JOIN orders o ON o.order_id = a.order_id
    WHERE a.status = $1 AND a.arrived_at >= $2 AND a.arrived_at < $3 AND o.tenant_id = $4
), errors AS (
    SELECT d.order_id,
           width_bucket(extract(epoch FROM d.actual_at - p.predicted_at), $6::float8[]) AS band,
           extract(epoch FROM d.actual_at - p.predicted_arrival) AS error_s
    FROM delivered d JOIN eta_predictions p ON p.order_id = d.order_id
    WHERE p.predicted_at <= d.actual_at AND ($5 = '' OR p.driver_id = $5)
)
SELECT band,
       count(*) AS predictions,
       count(DISTINCT order_id) AS deliveries,
       avg(error_s) AS mean_error_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(error_s)) AS median_absolute_error_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY abs(error_s)) AS p90_absolute_error_s,
       avg((abs(error_s) <= $7)::int) AS within_tolerance_ratio,
       -- Once per query (uncorrelated), cheaper than a second DISTINCT over every prediction;
       -- "delivered" is therefore read twice, and NOT MATERIALIZED keeps it inlined in both,
       -- where a materialized CTE hid its size from the planner (a seq scan of every ETA).
       (SELECT count(*) FROM delivered d WHERE d.reached AND EXISTS (
            SELECT 1 FROM eta_predictions p WHERE p.order_id = d.order_id
            AND p.predicted_at <= d.actual_at AND ($5 = '' OR p.driver_id = $5)
       )) AS deliveries_reached
FROM errors
GROUP BY ROLLUP (band)
"""


# The first fix of each delivered order's driver within the arrival radius of the drop-off (a
# local equirectangular distance: exact to centimetres at this scale) after the order was
# picked up and at most the lookback before the delivery. A drive past the drop-off on the
# way to the pickup does not count; a driver who confirms the delivery from the car, already
# driving off, still arrived when it first got there.
_REACHED = """
WITH d AS (
    SELECT a.order_id, a.arrived_at, o.driver_id, o.drop_off_lat AS lat, o.drop_off_lng AS lng,
           greatest(a.arrived_at - make_interval(secs => $4),
                    (SELECT max(e.at) FROM order_events e
                     WHERE e.order_id = a.order_id AND e.to_status = $6)) AS since
    FROM eta_arrivals a JOIN orders o ON o.order_id = a.order_id
    WHERE a.order_id = ANY($1::text[]) AND a.status = $2 AND o.driver_id IS NOT NULL
), reached AS (
    SELECT d.order_id, min(h.recorded_at) AS at
    FROM d JOIN location_history h ON h.driver_id = d.driver_id
     AND h.recorded_at > d.since AND h.recorded_at <= d.arrived_at
    WHERE power((h.lat - d.lat) * $5, 2) + power((h.lng - d.lng) * $5 * cos(radians(d.lat)), 2)
          <= power($3, 2)
    GROUP BY d.order_id
)
UPDATE eta_arrivals a SET reached_at = reached.at
FROM reached
WHERE a.order_id = reached.order_id AND a.status = $2
RETURNING a.order_id, a.reached_at
"""


def parse_horizons(text: str) -> tuple[float, ...]:
    """The band edges of ``eta_accuracy_horizons_s``: positive, increasing seconds."""
    try:
        edges = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"eta_accuracy_horizons_s={text!r} is not a list of seconds") from exc
    if not edges or any(not math.isfinite(e) or e <= 0 for e in edges):
        raise ValueError(f"eta_accuracy_horizons_s={text!r}: edges must be positive seconds")
    if list(edges) != sorted(set(edges)):
        raise ValueError(f"eta_accuracy_horizons_s={text!r}: edges must increase")
    return edges


def band_names(edges: Sequence[float]) -> list[str]:
    """The ``horizon`` label of each band: "0-300s", ..., "3600s+"."""
    lows = [0.0, *edges]
    names = [f"{low:g}-{high:g}s" for low, high in zip(lows, edges, strict=False)]
    return [*names, f"{edges[-1]:g}s+"]


async def record_reached(
    conn: Conn, order_ids: Sequence[str], settings: Settings
) -> dict[str, dt.datetime]:
    """Set ``reached_at`` of these delivered orders from their drivers' positions; returns
    the orders that got one (order id -> when the driver reached the drop-off)."""
    if not order_ids:
        return {}
    rows = await conn.fetch(
        _REACHED,
        list(order_ids),
        DELIVERED,
        settings.eta_arrival_radius_m,
        settings.eta_arrival_lookback_s,
        M_PER_DEG_LAT,
        PICKED_UP,
    )
    return {row["order_id"]: row["reached_at"] for row in rows}


async def score_delivered(
    conn: Conn, delivered: Mapping[str, dt.datetime], edges: Sequence[float]
) -> None:
    """Observe the error of every ETA shown before each actual arrival (order id -> when the
    driver reached the drop-off, else the delivery time) in :data:`ERROR`."""
    if not delivered:
        return
    rows = await conn.fetch(
        "SELECT order_id, predicted_at, predicted_arrival FROM eta_predictions"
        " WHERE order_id = ANY($1::text[])",
        list(delivered),
    )
    names = band_names(edges)
    for row in rows:
        arrived = delivered[row["order_id"]]
        if row["predicted_at"] > arrived:
            continue
        horizon_s = (arrived - row["predicted_at"]).total_seconds()
        band = names[bisect.bisect_right(edges, horizon_s)]
        ERROR.labels(band).observe((arrived - row["predicted_arrival"]).total_seconds())


def _summary(
    row: Any | None, horizon_from_s: float, horizon_to_s: float
) -> fleet_service_pb2.EtaAccuracy:
    """One EtaAccuracy from a row of the query (an empty one without a row)."""
    accuracy = fleet_service_pb2.EtaAccuracy(
        horizon_from_s=horizon_from_s, horizon_to_s=horizon_to_s
    )
    # An empty range still has its ROLLUP row: a count of 0, every average NULL.
    if row is not None and row["predictions"]:
        accuracy.predictions = row["predictions"]
        accuracy.deliveries = row["deliveries"]
        accuracy.mean_error_s = float(row["mean_error_s"])
        accuracy.median_absolute_error_s = float(row["median_absolute_error_s"])
        accuracy.p90_absolute_error_s = float(row["p90_absolute_error_s"])
        accuracy.within_tolerance_ratio = float(row["within_tolerance_ratio"])
    return accuracy


class EtaAccuracyReport:
    """The report bound to the database and the configured bands."""

    def __init__(self, settings: Settings, database: Database) -> None:
        """Fails on a malformed ``eta_accuracy_horizons_s`` (at start-up, not per call)."""
        self._database = database
        self._edges: Sequence[float] = parse_horizons(settings.eta_accuracy_horizons_s)
        self._tolerance_s = settings.eta_accuracy_tolerance_s
        self._timeout_s = settings.eta_accuracy_timeout_s

    async def get(
        self, request: fleet_service_pb2.GetEtaAccuracyRequest
    ) -> fleet_service_pb2.GetEtaAccuracyResponse:
        """FleetService.GetEtaAccuracy for the caller's tenant."""
        caller = require(Role.DISPATCHER, Role.SERVICE)
        start, end = client_range(request, MAX_SPAN)
        try:
            # asyncpg cancels the query in PostgreSQL when the timeout fires.
            rows = await self._database.pool.fetch(
                _QUERY,
                DELIVERED,
                start,
                end,
                caller.tenant_id,
                request.driver_id,
                [0.0, *self._edges],
                self._tolerance_s,
                timeout=self._timeout_s,
            )
        except TimeoutError as exc:
            raise ResourceExhausted(
                f"the report took longer than {self._timeout_s:g} s and was stopped;"
                " ask for a shorter time range or one driver"
            ) from exc
        by_band = {row["band"]: row for row in rows}
        response = fleet_service_pb2.GetEtaAccuracyResponse(tolerance_s=self._tolerance_s)
        overall = by_band.get(None)
        response.overall.CopyFrom(_summary(overall, 0.0, 0.0))
        if overall is not None:
            response.deliveries_reached = overall["deliveries_reached"]
        lows = [0.0, *self._edges]
        highs = [*self._edges, 0.0]
        for band, (low, high) in enumerate(zip(lows, highs, strict=True), start=1):
            response.bands.append(_summary(by_band.get(band), low, high))
        return response
