"""FleetService.GetEtaAccuracy: how far the ETAs customers saw were from the deliveries.

The ETA engine records every prediction (``eta_predictions``) and the order follower the
actual delivery (``eta_arrivals``, core/migrations/0004_eta.sql). This report takes the
caller's tenant's orders delivered in a time range and, for each prediction made for them
before the delivery, the error: actual minus predicted arrival (positive: the driver came
later than the customer was told). Errors are summarised overall and by horizon band (how
long before the delivery the prediction was made, ``eta_accuracy_horizons_s``): an ETA an
hour out is expected to be less exact than one two minutes out, and mixing them hides both.
One query; PostgreSQL computes the percentiles.

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
from core.inputs import client_range
from core.settings import Settings

if TYPE_CHECKING:
    from core.db import Conn

MAX_SPAN = dt.timedelta(days=92)
DELIVERED = common_pb2.ORDER_STATUS_DELIVERED
ERROR = Histogram(
    "lastmile_eta_error_seconds",
    "Actual minus predicted arrival of each ETA shown (positive: the driver came later than"
    " said), scored once when its order is delivered, by how long before the delivery the ETA"
    " was shown (bands of eta_accuracy_horizons_s).",
    ["horizon"],
    buckets=(-1800, -900, -600, -300, -120, -60, 0, 60, 120, 300, 600, 900, 1800),
)

# width_bucket over the edges with 0 prepended numbers the bands from 1: band 1 holds the
# predictions made less than the first edge before the delivery, band i those from edge i-1
# to edge i, the last one those from the last edge on. The ROLLUP row (band NULL) is the
# overall summary.
_QUERY = """
WITH delivered AS (
    SELECT a.order_id, a.arrived_at
    FROM eta_arrivals a JOIN orders o ON o.order_id = a.order_id
    WHERE a.status = $1 AND a.arrived_at >= $2 AND a.arrived_at < $3 AND o.tenant_id = $4
), errors AS (
    SELECT d.order_id,
           width_bucket(extract(epoch FROM d.arrived_at - p.predicted_at), $6::float8[]) AS band,
           extract(epoch FROM d.arrived_at - p.predicted_arrival) AS error_s
    FROM delivered d JOIN eta_predictions p ON p.order_id = d.order_id
    WHERE p.predicted_at <= d.arrived_at AND ($5 = '' OR p.driver_id = $5)
)
SELECT band,
       count(*) AS predictions,
       count(DISTINCT order_id) AS deliveries,
       avg(error_s) AS mean_error_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(error_s)) AS median_absolute_error_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY abs(error_s)) AS p90_absolute_error_s,
       avg((abs(error_s) <= $7)::int) AS within_tolerance_ratio
FROM errors
GROUP BY ROLLUP (band)
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


async def score_delivered(
    conn: Conn, delivered: Mapping[str, dt.datetime], edges: Sequence[float]
) -> None:
    """Observe the error of every ETA shown before each delivery (order id -> delivered at)
    in :data:`ERROR`."""
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
        response.overall.CopyFrom(_summary(by_band.get(None), 0.0, 0.0))
        lows = [0.0, *self._edges]
        highs = [*self._edges, 0.0]
        for band, (low, high) in enumerate(zip(lows, highs, strict=True), start=1):
            response.bands.append(_summary(by_band.get(band), low, high))
        return response
