-- One row per driver and capture time: the tracking processor's history writes become
-- idempotent (INSERT ... ON CONFLICT DO NOTHING), so replaying stream entries after a crash
-- between COPY and XACK adds no duplicates. Includes the partition key, as PostgreSQL
-- requires of unique indexes on partitioned tables; replaces the plain index on the same
-- columns.
CREATE UNIQUE INDEX location_history_driver_time_key ON location_history (driver_id, recorded_at);
DROP INDEX location_history_driver_time;
