-- A tenant's own tracking intervals (FleetService.UpdateTrackingIntervals), in seconds. NULL
-- means the deployment's default (a setting), so a changed default still reaches an interval
-- the tenant never set. Read by every gateway for its drivers' tenants (core/tracking_intervals.py).
CREATE TABLE tracking_intervals (
    tenant_id text PRIMARY KEY,
    active_capture_s double precision,
    active_upload_s double precision,
    passive_capture_s double precision,
    passive_upload_s double precision,
    updated_at timestamptz NOT NULL DEFAULT now()
);
