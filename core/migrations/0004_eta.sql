-- ETA predictions and actual arrivals, so the error of the ETA engine can be reported.
-- Written by the tracking processes (tracking/eta.py, tracking/order_follow.py).

-- Every ETA computed for an order: when, for when, and how far the driver still was.
CREATE TABLE IF NOT EXISTS eta_predictions (
    prediction_id      bigserial PRIMARY KEY,
    order_id           text NOT NULL,
    driver_id          text NOT NULL,
    predicted_at       timestamptz NOT NULL,
    predicted_arrival  timestamptz NOT NULL,
    remaining_s        double precision NOT NULL,
    remaining_m        double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS eta_predictions_order ON eta_predictions (order_id, predicted_at);

-- When the order actually got there: the first NEARBY and the DELIVERED event.
CREATE TABLE IF NOT EXISTS eta_arrivals (
    order_id    text NOT NULL,
    status      smallint NOT NULL,
    arrived_at  timestamptz NOT NULL,
    PRIMARY KEY (order_id, status)
);

-- Error of each prediction against the delivery (positive = the driver came later than
-- said), with how far ahead it was made: report with percentiles per horizon bucket.
CREATE OR REPLACE VIEW eta_errors AS
SELECT p.order_id,
       p.driver_id,
       p.predicted_at,
       extract(epoch FROM a.arrived_at - p.predicted_at) AS horizon_s,
       extract(epoch FROM a.arrived_at - p.predicted_arrival) AS error_s
FROM eta_predictions p
JOIN eta_arrivals a ON a.order_id = p.order_id AND a.status = 8
WHERE p.predicted_at <= a.arrived_at;
