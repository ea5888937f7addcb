-- Driver breaks: each driver's required breaks, a JSON list of DriverBreak messages (proto
-- field names). Wave planning schedules them on the driver's route.
ALTER TABLE drivers ADD COLUMN breaks jsonb NOT NULL DEFAULT '[]'::jsonb;
