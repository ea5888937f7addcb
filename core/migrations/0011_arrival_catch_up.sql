-- A tracking process starting up records the arrivals (NEARBY = 7, DELIVERED = 8) of the
-- last day that no process recorded because all were down (tracking/order_follow.py): this
-- index keeps that read to the day's arrivals, not every order event ever written.
CREATE INDEX order_events_arrivals ON order_events (at) WHERE to_status IN (7, 8);
