-- Outbound integrations (dispatch/webhooks/): integrators' webhook endpoints, one delivery per
-- event and endpoint, each HTTP attempt of a delivery, customer notifications (deduplicated),
-- and the position of the ETA delay watcher.

CREATE TABLE webhooks (
    webhook_id      text PRIMARY KEY,
    tenant_id       text NOT NULL,
    url             text NOT NULL,
    -- Event types delivered (see dispatch/webhooks/events.py); empty = every type.
    event_types     text[] NOT NULL DEFAULT '{}',
    -- HMAC-SHA256 key of the X-Lastmile-Signature header; shown only by CreateWebhook.
    signing_secret  text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at, webhook_id);

-- One event's delivery to one webhook. ``state`` holds lastmile.integration.v1.DeliveryState
-- numbers (1 pending, 2 delivered, 3 retrying, 4 dead). ``seq`` orders deliveries: an open
-- delivery of a (webhook, order) is sent only once no open one with a lower seq is left.
CREATE TABLE webhook_deliveries (
    delivery_id      text PRIMARY KEY,
    seq              bigserial NOT NULL UNIQUE,
    webhook_id       text NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    tenant_id        text NOT NULL,
    -- Stable id of the source event (order:<id>:<sequence>, proof:<id>, geofence:<entry>...).
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    order_id         text NOT NULL DEFAULT '',
    -- The exact JSON body POSTed on every attempt.
    body             text NOT NULL,
    state            smallint NOT NULL DEFAULT 1,
    attempt_count    integer NOT NULL DEFAULT 0,
    -- When the sender may (re)try; a claimed delivery's lease also moves it forward.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    -- Set on a manual redelivery: the delivery it repeats.
    redelivery_of    text
);
-- A replayed event inserts nothing; manual redeliveries are extra rows.
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (webhook_id, event_id)
    WHERE redelivery_of IS NULL;
-- The sender's queue and the per-order ordering check, over open deliveries only.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state IN (1, 3);
CREATE INDEX webhook_deliveries_open_order ON webhook_deliveries (webhook_id, order_id, seq)
    WHERE state IN (1, 3);
-- The delivery log of a webhook, newest first.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, seq DESC);

-- Every HTTP attempt of a delivery.
CREATE TABLE webhook_attempts (
    delivery_id    text NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt        integer NOT NULL,
    at             timestamptz NOT NULL,
    -- HTTP status; 0 for network errors and timeouts.
    response_code  integer NOT NULL DEFAULT 0,
    latency_ms     double precision NOT NULL,
    error          text NOT NULL DEFAULT '',
    succeeded      boolean NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Customer notifications sent, one per key: a replayed trigger never notifies twice.
-- Status triggers: sequence = the order event's sequence, scope ''. Delays: sequence = the
-- delay level (late by more than level x margin), scope = the drop-off window end it is
-- measured against.
CREATE TABLE customer_notifications (
    order_id    text NOT NULL,
    trigger     text NOT NULL,
    scope       text NOT NULL DEFAULT '',
    sequence    integer NOT NULL,
    tenant_id   text NOT NULL,
    text        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, trigger, scope, sequence)
);

-- Positions of polling workers (the delay watcher's last eta_predictions id).
CREATE TABLE webhook_cursors (
    name      text PRIMARY KEY,
    position  bigint NOT NULL DEFAULT 0
);
