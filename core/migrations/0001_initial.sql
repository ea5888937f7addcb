-- Initial schema: orders with their event log and outbox, drivers, origins, areas and provider
-- rules, routes and stops, proofs, geofences, and location history partitioned by day.
-- Enum-valued columns store the protobuf enum numbers (lastmile.*.v1).

CREATE TABLE drivers (
    driver_id       text PRIMARY KEY,
    tenant_id       text NOT NULL,
    name            text NOT NULL,
    phone           text NOT NULL DEFAULT '',
    capacity_units  integer NOT NULL DEFAULT 0 CHECK (capacity_units >= 0),
    depot_lat       double precision,
    depot_lng       double precision,
    shift_start     timestamptz,
    shift_end       timestamptz,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drivers_tenant ON drivers (tenant_id);

CREATE TABLE areas (
    area_id     text PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    -- [[lat, lng], ...] in order, first vertex not repeated.
    boundary    jsonb NOT NULL,
    -- Bounding box for a cheap first filter before the point-in-polygon test.
    min_lat     double precision NOT NULL,
    min_lng     double precision NOT NULL,
    max_lat     double precision NOT NULL,
    max_lng     double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX areas_tenant ON areas (tenant_id);

CREATE TABLE providers (
    provider_id   text PRIMARY KEY,
    tenant_id     text NOT NULL,
    name          text NOT NULL,
    transport     smallint NOT NULL,
    endpoint_url  text NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provider_rules (
    area_id               text NOT NULL REFERENCES areas ON DELETE CASCADE,
    position              integer NOT NULL,
    priority              integer NOT NULL,
    fleet                 smallint NOT NULL,
    provider_id           text REFERENCES providers,
    share_percent         integer NOT NULL CHECK (share_percent BETWEEN 0 AND 100),
    order_kind            smallint NOT NULL DEFAULT 0,
    fallback_provider_id  text REFERENCES providers,
    PRIMARY KEY (area_id, position)
);

CREATE TABLE origins (
    origin_id               text PRIMARY KEY,
    tenant_id               text NOT NULL,
    name                    text NOT NULL,
    kind                    smallint NOT NULL DEFAULT 0,
    address                 jsonb NOT NULL DEFAULT '{}',
    lat                     double precision NOT NULL,
    lng                     double precision NOT NULL,
    area_id                 text REFERENCES areas ON DELETE SET NULL,
    default_preparation_s   integer NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE routes (
    route_id       text PRIMARY KEY,
    tenant_id      text NOT NULL,
    driver_id      text NOT NULL REFERENCES drivers,
    version        integer NOT NULL DEFAULT 1,
    active         boolean NOT NULL DEFAULT true,
    planned_start  timestamptz,
    distance_m     double precision NOT NULL DEFAULT 0,
    duration_s     double precision NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- At most one route under way per driver.
CREATE UNIQUE INDEX routes_active_driver ON routes (driver_id) WHERE active;

CREATE TABLE orders (
    order_id                   text PRIMARY KEY,
    tenant_id                  text NOT NULL,
    idempotency_key            text NOT NULL,
    -- Hash of the creating request, so a reused key with other content is refused.
    request_digest             text NOT NULL,
    external_ref               text NOT NULL DEFAULT '',
    kind                       smallint NOT NULL,
    status                     smallint NOT NULL,
    origin_id                  text REFERENCES origins,
    pickup_address             jsonb NOT NULL,
    pickup_lat                 double precision NOT NULL,
    pickup_lng                 double precision NOT NULL,
    drop_off_address           jsonb NOT NULL,
    drop_off_lat               double precision NOT NULL,
    drop_off_lng               double precision NOT NULL,
    pickup_start               timestamptz,
    pickup_end                 timestamptz,
    drop_off_start             timestamptz,
    drop_off_end               timestamptz,
    instructions               jsonb NOT NULL DEFAULT '{}',
    size_units                 integer NOT NULL DEFAULT 1 CHECK (size_units >= 0),
    customer_name              text NOT NULL DEFAULT '',
    customer_phone             text NOT NULL DEFAULT '',
    driver_id                  text REFERENCES drivers,
    route_id                   text REFERENCES routes,
    fleet                      smallint NOT NULL DEFAULT 0,
    provider_id                text REFERENCES providers,
    area_id                    text REFERENCES areas ON DELETE SET NULL,
    -- Only a digest of the customer's tracking token is kept.
    tracking_token_digest      text NOT NULL UNIQUE,
    tracking_token_expires_at  timestamptz,
    tracking_token_revoked     boolean NOT NULL DEFAULT false,
    -- HMAC of the contactless delivery code; the code itself is never stored.
    delivery_code_digest       text NOT NULL DEFAULT '',
    attempt                    integer NOT NULL DEFAULT 1,
    last_failure_reason        smallint NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    delivered_at               timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX orders_tenant_status ON orders (tenant_id, status, created_at DESC);
CREATE INDEX orders_driver ON orders (driver_id) WHERE driver_id IS NOT NULL;
CREATE INDEX orders_origin ON orders (origin_id, created_at DESC);

-- Every state change of an order, in order. The source of truth for history and audits.
CREATE TABLE order_events (
    event_id     bigserial PRIMARY KEY,
    order_id     text NOT NULL REFERENCES orders ON DELETE CASCADE,
    sequence     integer NOT NULL,
    event_type   text NOT NULL,
    from_status  smallint NOT NULL,
    to_status    smallint NOT NULL,
    actor        text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, sequence)
);

-- Transactional outbox: written in the same transaction as the change it announces and
-- relayed to the bus afterwards, so a crash between the two loses nothing.
CREATE TABLE outbox (
    outbox_id     bigserial PRIMARY KEY,
    topic         text NOT NULL,
    key           text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (outbox_id) WHERE published_at IS NULL;

CREATE TABLE route_stops (
    route_id         text NOT NULL REFERENCES routes ON DELETE CASCADE,
    position         integer NOT NULL,
    stop_id          text NOT NULL,
    kind             smallint NOT NULL,
    order_id         text REFERENCES orders,
    lat              double precision NOT NULL,
    lng              double precision NOT NULL,
    window_start     timestamptz,
    window_end       timestamptz,
    service_time_s   integer NOT NULL DEFAULT 0,
    planned_arrival  timestamptz,
    completed_at     timestamptz,
    PRIMARY KEY (route_id, position),
    UNIQUE (stop_id)
);

CREATE TABLE proofs (
    proof_id      text PRIMARY KEY,
    order_id      text NOT NULL REFERENCES orders,
    driver_id     text NOT NULL REFERENCES drivers,
    attempt       integer NOT NULL,
    kind          smallint NOT NULL,
    object_key    text NOT NULL DEFAULT '',
    sha256        text NOT NULL DEFAULT '',
    captured_at   timestamptz NOT NULL,
    lat           double precision,
    lng           double precision,
    signer_name   text NOT NULL DEFAULT '',
    checks        jsonb NOT NULL DEFAULT '[]',
    flagged       boolean NOT NULL DEFAULT false,
    record_hash   text NOT NULL,
    confirmed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, attempt, kind)
);
CREATE INDEX proofs_flagged ON proofs (confirmed_at DESC) WHERE flagged;

CREATE TABLE geofences (
    geofence_id   text PRIMARY KEY,
    tenant_id     text NOT NULL,
    name          text NOT NULL DEFAULT '',
    -- {"circle": {"lat":..,"lng":..,"radius_m":..}} or {"polygon": [[lat,lng],...]}
    shape         jsonb NOT NULL,
    order_id      text REFERENCES orders ON DELETE CASCADE,
    purpose       smallint NOT NULL DEFAULT 0,
    min_dwell_s   integer NOT NULL DEFAULT 0,
    driver_ids    text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geofences_order ON geofences (order_id) WHERE order_id IS NOT NULL;

-- Every GPS fix, one partition per UTC day (see lastmile_ensure_history_partition); old days are
-- dropped whole by the retention job.
CREATE TABLE location_history (
    driver_id    text NOT NULL,
    recorded_at  timestamptz NOT NULL,
    lat          double precision NOT NULL,
    lng          double precision NOT NULL,
    accuracy_m   real NOT NULL DEFAULT 0,
    speed_mps    real NOT NULL DEFAULT -1,
    heading_deg  real NOT NULL DEFAULT -1,
    snapped_lat  double precision,
    snapped_lng  double precision,
    received_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (recorded_at);
CREATE INDEX location_history_driver_time ON location_history (driver_id, recorded_at);

CREATE FUNCTION lastmile_ensure_history_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'location_history_' || to_char(day, 'YYYYMMDD');
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF location_history FOR VALUES FROM (%L) TO (%L)',
        part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN part;
END $$;
