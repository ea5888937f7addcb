-- The ETA accuracy report (tracking/eta_accuracy.py) starts from the deliveries of a time
-- range; without this index every report would read all arrivals ever recorded.
CREATE INDEX IF NOT EXISTS eta_arrivals_delivered ON eta_arrivals (arrived_at) WHERE status = 8;
