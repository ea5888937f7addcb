-- Origins' decisions on their orders (lastmile.origin.v1.OriginService), and what an origin's
-- rejection falls back to. Written by dispatch (dispatch/origin_orders.py).

-- Origins tried, in order, when this origin rejects an order; a closed origin gets none.
ALTER TABLE origins ADD COLUMN fallback_origin_ids text[] NOT NULL DEFAULT '{}';
ALTER TABLE origins ADD COLUMN closed boolean NOT NULL DEFAULT false;

-- One row per order with an origin, about the origin the order is with now (a reroute moves
-- the row to the fallback and starts a new decision). Every change is also an order event.
CREATE TABLE origin_orders (
    order_id         text PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    tenant_id        text NOT NULL,
    origin_id        text NOT NULL REFERENCES origins,
    -- lastmile.origin.v1.OriginDecision: 1 pending, 2 accepted, 3 rejected, 4 ready.
    decision         smallint NOT NULL,
    preparation_s    integer,
    -- Expected ready for pickup (accepted) or ready (4); dispatch plans no pickup before it.
    ready_at         timestamptz,
    reject_reason    text NOT NULL DEFAULT '',
    -- Origins that rejected this order, so a reroute never goes back to one of them.
    rejected_by      text[] NOT NULL DEFAULT '{}',
    -- When the answer policy answers for a silent origin; cleared once nobody needs to answer.
    answer_due_at    timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    answered_at      timestamptz,
    ready_marked_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX origin_orders_origin ON origin_orders (origin_id, received_at);
-- The answer-policy worker's look-up of due decisions.
CREATE INDEX origin_orders_due ON origin_orders (answer_due_at)
    WHERE decision = 1 AND answer_due_at IS NOT NULL;
