-- Orders lifecycle: per-order event counter, split audit, external provider tracking, and the
-- tenant on outbox rows (so WatchOrders can filter the relayed stream by tenant).

-- Last order_events.sequence of the order: the next event takes last_sequence + 1 under the
-- row lock, without scanning the log.
ALTER TABLE orders ADD COLUMN last_sequence integer NOT NULL DEFAULT 0;
-- Why the rules engine chose this fleet/provider (SplitDecision.explanation).
ALTER TABLE orders ADD COLUMN split_explanation text NOT NULL DEFAULT '';
-- The provider's id of the order once submitted, and the last status it reported.
ALTER TABLE orders ADD COLUMN provider_external_id text NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN provider_status text NOT NULL DEFAULT '';
CREATE INDEX orders_provider_open ON orders (provider_id, provider_external_id)
    WHERE provider_id IS NOT NULL;
-- Keyset paging of ListOrders: newest first, order_id breaks ties.
CREATE INDEX orders_tenant_created ON orders (tenant_id, created_at DESC, order_id DESC);

ALTER TABLE outbox ADD COLUMN tenant_id text NOT NULL DEFAULT '';

CREATE INDEX origins_tenant ON origins (tenant_id, origin_id);
CREATE INDEX providers_tenant ON providers (tenant_id);
