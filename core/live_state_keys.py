"""Where drivers' live state lives in Redis: the contract between its writer (the tracking
processor) and its readers (fleet search, fleet watching, geofences).

* :data:`DRIVERS_GEO`: a GEO set, member = driver id, position = the latest raw fix.
* :func:`driver_key`: one hash per driver with the ``FIELD_*`` fields below, all strings.
  ``status`` is a lastmile.common.v1.DriverStatus number, ``position_at`` epoch milliseconds,
  ``snapped_lat``/``snapped_lng`` empty when the fix was not snapped to a road. ``tenant``
  is the tenant of the driver's token (from the gateway): fleet readers show a driver only to
  its own tenant, and a driver without one to nobody. ``status_at`` and ``stop_at`` (epoch
  milliseconds) are when the status and the current stop last changed in the app: a change
  older than the stored one (driver events are applied by several processes) is not applied.
"""

from __future__ import annotations

#: GEO set of every driver's latest raw position.
DRIVERS_GEO = "lastmile:drivers:geo"

FIELD_LAT = "lat"
FIELD_LNG = "lng"
FIELD_HEADING = "heading"
FIELD_SPEED = "speed"
FIELD_ACCURACY = "accuracy"
FIELD_POSITION_AT = "position_at"
FIELD_STATUS = "status"
FIELD_STATUS_AT = "status_at"
FIELD_STOP_AT = "stop_at"
FIELD_CURRENT_ORDER_ID = "current_order_id"
FIELD_CURRENT_STOP_ID = "current_stop_id"
FIELD_SNAPPED_LAT = "snapped_lat"
FIELD_SNAPPED_LNG = "snapped_lng"
FIELD_NAME = "name"
FIELD_TENANT = "tenant"


def driver_key(driver_id: str) -> str:
    """The live-state hash of one driver."""
    return f"lastmile:driver:{driver_id}"


def geofence_state_key(driver_id: str) -> str:
    """Per-driver geofence state (field = fence id): kept by the geofence engine."""
    return f"lastmile:geofence-state:{driver_id}"
