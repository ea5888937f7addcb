-- The ETA's actual arrival is when the driver got to the drop-off, not the hand-over that
-- DELIVERED records minutes later: reached_at is when the driver's positions first reached
-- the drop-off (within eta_arrival_radius_m) after the pickup, NULL when they never did (no
-- fixes there, or a drop-off pin far from where the driver stopped). Set on the DELIVERED row by
-- tracking's order follower (tracking/eta_accuracy.py); the errors fall back to arrived_at.
ALTER TABLE eta_arrivals ADD COLUMN reached_at timestamptz;

CREATE OR REPLACE VIEW eta_errors AS
SELECT p.order_id,
       p.driver_id,
       p.predicted_at,
       extract(epoch FROM coalesce(a.reached_at, a.arrived_at) - p.predicted_at) AS horizon_s,
       extract(epoch FROM coalesce(a.reached_at, a.arrived_at) - p.predicted_arrival) AS error_s
FROM eta_predictions p
JOIN eta_arrivals a ON a.order_id = p.order_id AND a.status = 8
WHERE p.predicted_at <= coalesce(a.reached_at, a.arrived_at);
