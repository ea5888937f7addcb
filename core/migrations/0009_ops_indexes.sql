-- Operator metrics (dispatch/ops_metrics.py) count dead webhook deliveries every few seconds:
-- a partial index keeps that cheap however many delivered rows the table holds (dead ones are
-- few).
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (created_at) WHERE state = 4;
