-- Driver guidance: the route version the driver's app acknowledged (RouteAck), and when.
-- 0 until the first acknowledgement; it only moves up, and never past routes.version.
ALTER TABLE routes
    ADD COLUMN acked_version integer NOT NULL DEFAULT 0,
    ADD COLUMN acked_at timestamptz;
