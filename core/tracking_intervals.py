"""Tracking intervals: how often a tenant's driver apps capture fixes and upload them.

The deployment's defaults are settings (``LASTMILE_ACTIVE_CAPTURE_INTERVAL_S`` and its three
siblings). A tenant may override any of the four at run time
(``FleetService.UpdateTrackingIntervals``): overrides live in the ``tracking_intervals`` table,
one row per tenant, NULL where the default applies, so that a changed default still reaches
the intervals a tenant never set. A change is announced on
:data:`core.topics.TRACKING_INTERVALS`; the gateway, the one process that tells apps their
config (Welcome, mode switches, these changes), re-sends it to the apps it holds
(gateway/tracking_configs.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.duration_pb2 import Duration
from lastmile.driver.v1 import driver_pb2
from lastmile.tracking.v1 import tracking_pb2

from core.db import Database
from core.errors import InvalidArgument
from core.settings import Settings

#: Shortest capture interval a tenant may set: phones' GPS gives about one fix a second.
MIN_CAPTURE_S = 1.0
#: Longest capture or upload interval: an idle driver still shows on the map every hour.
MAX_INTERVAL_S = 3600.0
# The four intervals, named as in the contract (``<name>_interval``) and here (``<name>_s``).
NAMES = ("active_capture", "active_upload", "passive_capture", "passive_upload")


@dataclass(frozen=True, slots=True)
class Intervals:
    """Capture and upload intervals (s) of both tracking modes."""

    active_capture_s: float
    active_upload_s: float
    passive_capture_s: float
    passive_upload_s: float

    def of_mode(self, mode: int) -> tuple[float, float]:
        """(capture, upload) of ``mode``; anything but ACTIVE is PASSIVE."""
        if mode == driver_pb2.TRACKING_MODE_ACTIVE:
            return self.active_capture_s, self.active_upload_s
        return self.passive_capture_s, self.passive_upload_s


@dataclass(frozen=True, slots=True)
class Overrides:
    """A tenant's own intervals (s); None where the deployment's default applies."""

    active_capture_s: float | None = None
    active_upload_s: float | None = None
    passive_capture_s: float | None = None
    passive_upload_s: float | None = None
    #: When the tenant last changed them (None: never).
    updated_at: dt.datetime | None = None


def defaults(settings: Settings) -> Intervals:
    """The deployment's intervals."""
    return Intervals(
        settings.active_capture_interval_s,
        settings.active_upload_interval_s,
        settings.passive_capture_interval_s,
        settings.passive_upload_interval_s,
    )


def effective(overrides: Overrides | None, settings: Settings) -> Intervals:
    """The intervals in force: the tenant's where it set them, else the defaults."""
    base = defaults(settings)
    if overrides is None:
        return base
    changes = {
        f"{name}_s": value
        for name in NAMES
        if (value := getattr(overrides, f"{name}_s")) is not None
    }
    return dataclasses.replace(base, **changes)


def overrides_from_proto(message: tracking_pb2.TrackingIntervals) -> Overrides:
    """The intervals a request sets; InvalidArgument names a duration that is no duration."""
    values: dict[str, float | None] = {}
    for name in NAMES:
        field = f"{name}_interval"
        given = message.HasField(field)
        values[name] = _seconds(getattr(message, field), f"intervals.{field}") if given else None
    return Overrides(
        values["active_capture"],
        values["active_upload"],
        values["passive_capture"],
        values["passive_upload"],
    )


def check(intervals: Intervals, settings: Settings) -> None:
    """Refuse intervals an app could not follow or the gateway would refuse the batches of."""
    for mode in ("active", "passive"):
        capture = getattr(intervals, f"{mode}_capture_s")
        upload = getattr(intervals, f"{mode}_upload_s")
        if not MIN_CAPTURE_S <= capture <= MAX_INTERVAL_S:
            raise InvalidArgument(
                f"intervals.{mode}_capture_interval must be between {MIN_CAPTURE_S:g} s and"
                f" {MAX_INTERVAL_S:g} s (it is {capture:g} s)"
            )
        if not capture <= upload <= MAX_INTERVAL_S:
            raise InvalidArgument(
                f"intervals.{mode}_upload_interval must be between the capture interval"
                f" ({capture:g} s) and {MAX_INTERVAL_S:g} s (it is {upload:g} s)"
            )
        if upload / capture > settings.ingest_max_batch_size:
            raise InvalidArgument(
                f"intervals.{mode}_upload_interval / {mode}_capture_interval is"
                f" {upload / capture:g} fixes a batch; the gateway takes at most"
                f" {settings.ingest_max_batch_size}"
            )


def to_proto(
    intervals: Intervals, updated_at: dt.datetime | None
) -> tracking_pb2.TrackingIntervals:
    """The contract's view: every interval set; update_time only once the tenant set some."""
    message = tracking_pb2.TrackingIntervals()
    for name in NAMES:
        getattr(message, f"{name}_interval").CopyFrom(_duration(getattr(intervals, f"{name}_s")))
    if updated_at is not None:
        message.update_time.FromDatetime(updated_at)
    return message


def tracking_config(
    intervals: Intervals, mode: int, settings: Settings
) -> driver_pb2.TrackingConfig:
    """What an app in ``mode`` is told: its intervals and the gateway's limits."""
    active = mode == driver_pb2.TRACKING_MODE_ACTIVE
    capture, upload = intervals.of_mode(mode)
    config = driver_pb2.TrackingConfig(
        mode=driver_pb2.TRACKING_MODE_ACTIVE if active else driver_pb2.TRACKING_MODE_PASSIVE,
        min_distance_m=settings.tracking_min_distance_m,
        max_batch_size=settings.ingest_max_batch_size,
    )
    config.capture_interval.CopyFrom(_duration(capture))
    config.upload_interval.CopyFrom(_duration(upload))
    return config


class IntervalStore:
    """The ``tracking_intervals`` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def load(self, tenant_ids: Sequence[str]) -> dict[str, Overrides]:
        """The overrides of those tenants that have any."""
        rows = await self._database.pool.fetch(
            "SELECT tenant_id, active_capture_s, active_upload_s, passive_capture_s,"
            " passive_upload_s, updated_at FROM tracking_intervals WHERE tenant_id = ANY($1)",
            list(tenant_ids),
        )
        return {row["tenant_id"]: _overrides(row) for row in rows}

    async def save(self, tenant_id: str, overrides: Overrides) -> Overrides:
        """Replace the tenant's overrides; returns them with their update time. None at all:
        the tenant is back on the defaults, as if it had never set any."""
        if all(getattr(overrides, f"{name}_s") is None for name in NAMES):
            await self._database.pool.execute(
                "DELETE FROM tracking_intervals WHERE tenant_id = $1", tenant_id
            )
            return Overrides()
        row = await self._database.pool.fetchrow(
            "INSERT INTO tracking_intervals (tenant_id, active_capture_s, active_upload_s,"
            " passive_capture_s, passive_upload_s, updated_at) VALUES ($1, $2, $3, $4, $5, now())"
            " ON CONFLICT (tenant_id) DO UPDATE SET active_capture_s = $2,"
            " active_upload_s = $3, passive_capture_s = $4, passive_upload_s = $5,"
            " updated_at = now()"
            " RETURNING active_capture_s, active_upload_s, passive_capture_s, passive_upload_s,"
            " updated_at",
            tenant_id,
            overrides.active_capture_s,
            overrides.active_upload_s,
            overrides.passive_capture_s,
            overrides.passive_upload_s,
        )
        return _overrides(row)


def _overrides(row: Any) -> Overrides:
    return Overrides(
        row["active_capture_s"],
        row["active_upload_s"],
        row["passive_capture_s"],
        row["passive_upload_s"],
        row["updated_at"],
    )


def _seconds(duration: Duration, field: str) -> float:
    if duration.seconds < 0 or duration.nanos < 0 or duration.nanos >= 1_000_000_000:
        raise InvalidArgument(f"{field} must be a positive duration")
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration
