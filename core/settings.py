"""One typed, frozen settings object per process, read from ``LASTMILE_*`` environment variables.

Every field has a default that works for the local stack, and a one-line doc. Nothing else in
the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

PREFIX = "LASTMILE_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True, slots=True)
class Settings:
    """Process configuration. Environment variable = ``LASTMILE_`` + field name upper-cased."""

    # --- network -------------------------------------------------------------------------
    host: str = _doc("Interface every server binds to.", "127.0.0.1")
    gateway_port: int = _doc("gRPC port of the driver gateway.", 50051)
    tracking_port: int = _doc("gRPC port of the tracking service.", 50052)
    dispatch_port: int = _doc("gRPC port of the dispatch service.", 50053)
    pod_port: int = _doc("gRPC port of the proof-of-delivery service.", 50054)
    edge_port: int = _doc("Envoy edge port (gRPC and grpc-web).", 8080)
    edge_admin_port: int = _doc("Envoy admin port (loopback only).", 9901)
    metrics_port: int = _doc(
        "Prometheus port of this process (0 = off); `lastmile up` gives services this + index.",
        9100,
    )

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = _doc(
        "Where `lastmile up` keeps server data and logs.", PROJECT_ROOT / ".lastmile"
    )
    database_url: str = _doc(
        "PostgreSQL DSN.", "postgresql://lastmile:lastmile@127.0.0.1:55432/lastmile"
    )
    db_pool_min: int = _doc("Minimum connections in the asyncpg pool.", 1)
    db_pool_max: int = _doc("Maximum connections in the asyncpg pool.", 10)
    redis_url: str = _doc("Redis URL.", "redis://127.0.0.1:56379/0")
    s3_endpoint: str = _doc("S3 endpoint host:port.", "127.0.0.1:58333")
    s3_access_key: str = _doc("S3 access key.", "lastmile")
    s3_secret_key: str = _doc("S3 secret key.", "lastmile-dev-secret")
    s3_secure: bool = _doc("Use TLS towards S3.", False)
    s3_region: str = _doc("S3 region used for signing.", "us-east-1")
    proof_bucket: str = _doc("Bucket holding proof-of-delivery objects.", "proofs")
    history_retention_days: int = _doc("Days of location history kept.", 7)

    # --- roads ---------------------------------------------------------------------------
    osm_pbf: Path = _doc(
        "OpenStreetMap extract of the city served.", PROJECT_ROOT / "maps" / "malta.osm.pbf"
    )
    graph_dir: Path = _doc(
        "Where the OSRM graph is built and read.", PROJECT_ROOT / ".lastmile" / "graph"
    )

    # --- auth ----------------------------------------------------------------------------
    token_secret: str = _doc(
        "HMAC key for signed driver/dispatcher tokens (32+ bytes).",
        "dev-only-signing-key-change-me-in-production",
    )
    token_audience: str = _doc("Audience claim expected in tokens.", "lastmile")
    token_ttl_s: int = _doc("Lifetime of issued tokens in seconds.", 12 * 3600)

    # --- runtime -------------------------------------------------------------------------
    log_level: str = _doc("Log level (DEBUG, INFO, WARNING, ERROR).", "INFO")
    shutdown_grace_s: float = _doc("Seconds given to open streams to drain on shutdown.", 5.0)
    max_message_bytes: int = _doc("Largest gRPC message accepted.", 4 * 1024 * 1024)
    ingest_shards: int = _doc("Number of Redis stream shards for driver pings.", 4)
    gc_young_threshold: int = _doc(
        "Net allocations between young-generation garbage collections once a process serves"
        " (core/gc_tuning.py; 0 keeps Python's default of 700).",
        50_000,
    )

    # --- limits, timeouts and the edge's guards (docs/security.md) -------------------------
    server_max_concurrent_rpcs: int = _doc(
        "Most RPCs (streams included) one server runs at once; beyond: RESOURCE_EXHAUSTED.",
        100_000,
    )
    server_max_pending_calls: int = _doc(
        "Calls gRPC core holds for a server before its event loop takes them (apps reconnecting"
        " together after a restart); past this, core cancels new calls at random, and all of"
        " them past twice this. gRPC's own default, 1,000, lost a quarter of a 3,000-stream"
        " burst (core/runtime.py).",
        20_000,
    )
    server_max_inflight_unary: int = _doc(
        "Most unary RPCs one server handles at once; beyond: RESOURCE_EXHAUSTED (not health).",
        1000,
    )
    limiter_max_keys: int = _doc(
        "Most identities one rate limiter remembers (the least recently seen are forgotten).",
        100_000,
    )
    gateway_driver_rate_per_s: float = _doc(
        "Events per second one driver may send (token bucket per gateway process).", 20.0
    )
    gateway_driver_burst: int = _doc(
        "Events one driver may send at once above the rate (a resend after reconnecting).", 200
    )
    gateway_max_streams_per_driver: int = _doc(
        "Connect streams one driver holds per gateway process; a new one replaces the oldest.", 1
    )
    track_max_streams_per_token: int = _doc(
        "Track streams one tracking link may hold per tracking process; beyond: refused.", 5
    )
    track_token_rate_per_s: float = _doc(
        "Requests per second one tracking link may make (GetTracking, Track) per process.", 2.0
    )
    track_token_burst: int = _doc("Requests one tracking link may make at once above the rate.", 20)
    redis_timeout_s: float = _doc(
        "Connect and read timeout of Redis calls (s), on top of a blocking read's own wait.", 10.0
    )
    db_connect_timeout_s: float = _doc("Timeout of opening a PostgreSQL connection (s).", 10.0)
    db_command_timeout_s: float = _doc("Timeout of one PostgreSQL statement (s).", 30.0)
    s3_timeout_s: float = _doc("Connect and read timeout of each S3 call (s).", 30.0)
    ops_metrics_interval_s: float = _doc(
        "How often dispatch measures its backlog gauges (outbox, webhook deliveries).", 15.0
    )
    edge_allowed_origins: str = _doc(
        "Browser origins allowed to call the edge cross-origin (comma-separated, no '*').",
        "http://127.0.0.1:8080,http://localhost:8080",
    )
    edge_max_request_bytes: int = _doc(
        "Largest request body the edge takes on an API route (413 beyond; not Connect).",
        1024 * 1024,
    )
    edge_web_max_request_bytes: int = _doc(
        "Largest request body the edge takes for the browser apps' pages (413 beyond).", 64 * 1024
    )

    # --- ingest (gateway) and tracking processor -------------------------------------------
    ingest_max_batch_size: int = _doc("Most fixes one LocationBatch may carry.", 100)
    ingest_max_accuracy_m: float = _doc("Largest accuracy radius (m) a fix may claim.", 5000.0)
    ingest_max_speed_mps: float = _doc("Largest ground speed (m/s) a fix may claim.", 100.0)
    ingest_max_future_s: float = _doc("How far ahead of the server clock a fix may be.", 30.0)
    ingest_max_age_s: float = _doc("How far behind the server clock a fix may be.", 24 * 3600.0)
    ingest_stream_maxlen: int = _doc(
        "Approximate cap on entries kept per ping shard stream (processed or not).", 1_000_000
    )
    ingest_enqueue_batch: int = _doc("Most events the gateway enqueues per Redis round trip.", 512)
    active_capture_interval_s: float = _doc("Capture interval while on a delivery.", 1.0)
    active_upload_interval_s: float = _doc("Upload interval while on a delivery.", 5.0)
    passive_capture_interval_s: float = _doc("Capture interval while idle.", 30.0)
    passive_upload_interval_s: float = _doc("Upload interval while idle.", 120.0)
    tracking_intervals_refresh_s: float = _doc(
        "How often a gateway re-reads its drivers' tenants' tracking intervals (catches a"
        " change whose announcement it missed).",
        30.0,
    )
    tracking_min_distance_m: float = _doc("Fixes closer than this to the last may be skipped.", 5.0)
    processor_read_count: int = _doc("Most stream entries the processor reads per round.", 1000)
    ping_dead_letters_max: int = _doc(
        "Most unreadable ping entries kept for replay (``lastmile dead-letters``); older ones"
        " are trimmed.",
        100_000,
    )
    processor_block_ms: int = _doc("How long the processor blocks waiting for entries.", 1000)
    processor_claim_idle_ms: int = _doc(
        "Pending entries idle this long are claimed from dead consumers.", 30_000
    )
    processor_claim_interval_s: float = _doc("How often pending entries are checked.", 15.0)
    processor_lease_s: float = _doc(
        "Lease of a tracking process on its ping shards and on its membership: a dead"
        " process's shards move to the others after this long (tracking.shard_leases).",
        10.0,
    )
    snap_mode: str = _doc(
        "Road snapping: nearest (the latest fix of each driver and round), match (every fix, one"
        " call per batch) or off.",
        "nearest",
    )
    snap_max_distance_m: float = _doc("Fixes farther from a road than this stay unsnapped.", 50.0)
    retention_interval_s: float = _doc("How often old history partitions are dropped.", 3600.0)
    history_partitions_ahead: int = _doc("Days of history partitions created in advance.", 2)
    path_max_points: int = _doc("Most points GetDriverPath returns.", 100_000)

    # --- fleet: driver search, geofences, fleet watching -----------------------------------
    search_default_limit: int = _doc("SearchDrivers results when the request sets no limit.", 50)
    search_max_limit: int = _doc("Most results SearchDrivers returns.", 1000)
    search_max_radius_m: float = _doc("Largest search circle radius or box side (m).", 100_000.0)
    search_max_vertices: int = _doc("Most vertices of a search or geofence polygon.", 256)
    isochrone_max_speed_mps: float = _doc(
        "Speed no road exceeds (m/s): drivers farther than max_drive x this are not checked.",
        30.0,
    )
    isochrone_max_drive_s: float = _doc("Longest isochrone drive time accepted (s).", 3600.0)
    isochrone_table_chunk: int = _doc(
        "Candidates per step of the isochrone search's early-stop test.", 128
    )
    road_workers: int = _doc(
        "Worker processes computing isochrone drive times off the event loop, in parallel"
        " (core.road_pool); 0 computes them in the serving process.",
        2,
    )
    isochrone_max_candidates: int = _doc(
        "Most candidates (nearest first) whose drive time an isochrone search computes.", 256
    )
    geofence_enter_margin_m: float = _doc("How far inside a fence a fix must be to enter.", 10.0)
    geofence_exit_margin_m: float = _doc("How far outside a fence a fix must be to exit.", 25.0)
    geofence_cache_ttl_s: float = _doc("Longest time geofence engines keep fences cached.", 30.0)
    geofence_events_maxlen: int = _doc("Approximate cap on stored geofence events.", 1_000_000)
    geofence_list_max_page: int = _doc("Most geofences ListGeofences returns per page.", 500)
    watch_block_ms: int = _doc("How long Watch* streams block on Redis per read.", 5000)
    fleet_watch_interval_s: float = _doc(
        "WatchFleet sends at most one update per this many seconds.", 0.25
    )
    fleet_message_max_drivers: int = _doc(
        "Most drivers in one WatchFleet message (about 100 bytes each; gRPC caps at 4 MB).", 5000
    )

    # --- orders: lifecycle, outbox, failed deliveries, provider rules (dispatch) -----------
    order_page_size_default: int = _doc("ListOrders/ListDrivers page size when unset.", 50)
    order_page_size_max: int = _doc("Largest page ListOrders/ListDrivers return.", 500)
    tracking_token_grace_s: int = _doc("Tracking links stay valid this long after delivery.", 86400)
    delivery_code_secret: str = _doc("HMAC key for contactless delivery codes.", "dev-only-code")
    failure_policies: str = _doc(
        "Policy per failure reason (REATTEMPT, RESCHEDULE or RETURN_TO_ORIGIN).",
        "NOT_HOME=REATTEMPT,ACCESS_PROBLEM=RESCHEDULE,WRONG_ADDRESS=RETURN_TO_ORIGIN,"
        "REFUSED=RETURN_TO_ORIGIN,DAMAGED=RETURN_TO_ORIGIN",
    )
    max_delivery_attempts: int = _doc("Attempts after which a failed order returns.", 3)
    failed_reschedule_shift_s: int = _doc("RESCHEDULE policy: the window moves this far.", 86400)
    failed_reschedule_window_s: int = _doc("RESCHEDULE policy: length of a new window.", 7200)
    reschedule_horizon_s: int = _doc("How far ahead a drop-off window may be moved.", 14 * 86400)
    outbox_relay_enabled: bool = _doc("Relay the order outbox to the bus (off: tests).", True)
    outbox_batch_size: int = _doc("Most outbox rows relayed per transaction.", 100)
    outbox_poll_interval_s: float = _doc("How often the relay looks for unpublished rows.", 0.2)
    order_consumer_block_ms: int = _doc(
        "How long the driver-event consumers (dispatch's and tracking's) block.", 1000
    )
    order_consumer_claim_idle_ms: int = _doc(
        "Driver events pending this long (a dead or restarted replica's) are claimed, by"
        " dispatch's and tracking's consumers alike.",
        30_000,
    )
    provider_callback_port: int = _doc("HTTP port of provider callbacks (0 = any free).", 0)
    provider_callback_secret: str = _doc(
        "HMAC key shared with external providers.", "dev-only-provider"
    )
    provider_poll_interval_s: float = _doc("How often polling providers are asked.", 2.0)
    provider_http_timeout_s: float = _doc("Timeout of each call to a provider.", 5.0)

    # --- webhooks and customer notifications (dispatch/webhooks) ---------------------------
    webhook_timeout_s: float = _doc(
        "Longest wait for a webhook's answer (s); then it failed.", 10.0
    )
    webhook_max_attempts: int = _doc("Attempts of a delivery before it is dead-lettered.", 12)
    webhook_backoff_base_s: float = _doc("Wait before a delivery's first retry; doubles.", 10.0)
    webhook_backoff_max_s: float = _doc("Longest wait between two attempts of a delivery.", 3600.0)
    webhook_poll_interval_s: float = _doc("How often the webhook workers look for work.", 0.5)
    webhook_batch_size: int = _doc("Most bus events turned into deliveries per round.", 200)
    webhook_concurrency: int = _doc("Most webhook POSTs in flight per dispatch process.", 8)
    notify_delay_margin_s: float = _doc(
        "Customers hear of a delay once the ETA passes the window end by this (again per margin).",
        600.0,
    )
    notify_timezone: str = _doc("Time zone of the times in customer notification texts.", "UTC")
    notify_max_age_s: float = _doc(
        "Status changes older than this when read (a backlog) notify no customer.", 1800.0
    )

    # --- proof of delivery (pod) ------------------------------------------------------------
    pod_upload_max_bytes: int = _doc("Largest proof object a driver may upload.", 10 * 1024 * 1024)
    pod_upload_expiry_s: int = _doc("Lifetime of a pre-signed proof upload form.", 300)
    pod_download_expiry_s: int = _doc("Lifetime of a pre-signed proof download URL.", 60)
    pod_max_address_distance_m: float = _doc(
        "Farthest a proof's position (submitted or EXIF) may be from the drop-off.", 200.0
    )
    pod_max_position_gap_m: float = _doc(
        "Farthest a photo's EXIF GPS may be from the position the app submitted.", 200.0
    )
    pod_max_clock_skew_s: float = _doc(
        "Largest gap between EXIF time, submitted capture time and server time.", 300.0
    )
    pod_max_capture_age_s: float = _doc("Oldest capture time accepted as current.", 6 * 3600.0)
    pod_doubt_policies: str = _doc(
        "Per doubtful check: reject or flag (accept, hold for review).",
        "exif_present=flag,exif_time=flag,exif_gps=flag,address_distance=flag,capture_time=flag",
    )
    pod_page_size_default: int = _doc("ListFlaggedProofs page size when unset.", 50)
    pod_page_size_max: int = _doc("Largest page ListFlaggedProofs returns.", 500)

    # --- customer tracking: Track streams, position fan-out, ETAs (tracking) ---------------
    track_queue_size: int = _doc("Updates buffered per Track stream (oldest positions drop).", 64)
    track_token_check_s: float = _doc(
        "How often a tracking process re-checks the links of its open Track streams: an"
        " expired link's streams end within this (a revoked one's at once, when dispatch's"
        " announcement is heard; within this otherwise).",
        30.0,
    )
    track_snapshot_batch: int = _doc(
        "Most Track streams opening together whose link, order or live state one query reads"
        " (streams opening at once share queries, one of each kind at a time per process).",
        200,
    )
    customer_position_decimals: int = _doc(
        "Decimals of lat/lng shown to customers (4 = about 11 m: approximate).", 4
    )
    fanout_orders_ttl_s: float = _doc("How long a driver's active orders stay cached.", 10.0)
    eta_refresh_distance_m: float = _doc("A driver who moved this far gets new ETAs.", 150.0)
    eta_refresh_interval_s: float = _doc("ETAs older than this are refreshed anyway.", 30.0)
    eta_max_routes_per_batch: int = _doc(
        "Most OSRM routes one processed batch computes (the rest wait for the next).", 20
    )
    eta_pickup_service_s: float = _doc("Service time at a pickup without a planned one.", 120.0)
    eta_drop_off_service_s: float = _doc("Service time at a drop-off without a planned one.", 90.0)
    eta_arrival_radius_m: float = _doc(
        "A driver whose position is this close to the drop-off has arrived there: the actual"
        " arrival ETAs are measured against (else the delivery time).",
        75.0,
    )
    eta_arrival_lookback_s: float = _doc(
        "How far before the delivery (and never before the pickup) the driver's positions are"
        " searched for its arrival at the drop-off.",
        3600.0,
    )
    eta_arrivals_catch_up_s: float = _doc(
        "How far back a starting tracking process records the arrivals that no process"
        " recorded (every one was down): their ETAs are scored late rather than never.",
        86400.0,
    )
    eta_accuracy_horizons_s: str = _doc(
        "Band edges (seconds before the delivery, increasing, comma-separated) of the ETA"
        " accuracy report (FleetService.GetEtaAccuracy).",
        "300,900,1800,3600",
    )
    eta_accuracy_tolerance_s: float = _doc(
        "An ETA off by at most this many seconds counts as on time in the accuracy report.", 120.0
    )
    eta_accuracy_timeout_s: float = _doc(
        "Longest an ETA accuracy report may query; a longer one is stopped and refused.", 20.0
    )

    # --- web: browser apps and the road base map (ops/web.py) ------------------------------
    web_port: int = _doc("HTTP port of the browser apps and /roads (behind the edge).", 8090)
    web_dist_dir: Path = _doc(
        "Built browser apps (`npm run build:apps`).", PROJECT_ROOT / "clients" / "web" / "dist"
    )
    web_roads_cache: int = _doc("Road base-map answers (tiles) kept in memory.", 1024)
    web_dev_tenant: str = _doc(
        "Tenant of the dev dispatcher token `lastmile up` prints (the simulator's).", "sim"
    )

    # --- origins: decisions on incoming orders, answer policy (dispatch) --------------------
    origin_answer_timeout_s: float = _doc(
        "Seconds an origin has to accept or reject a new order before the policy answers.", 180.0
    )
    origin_answer_policy: str = _doc(
        "Answer for a silent origin: auto_accept (its default preparation) or reject.",
        "auto_accept",
    )
    origin_sweep_interval_s: float = _doc("How often unanswered orders are looked for.", 1.0)
    origin_max_preparation_s: float = _doc("Longest preparation time an origin may set.", 14400.0)
    origin_snapshot_max: int = _doc("Most open orders WatchOriginOrders replays first.", 1000)

    # --- wave planning (dispatch) --------------------------------------------------------
    wave_interval_s: float = _doc("Seconds between scheduled waves (0 = no schedule).", 300.0)
    wave_horizon_s: float = _doc("A wave takes orders whose window opens within this.", 4 * 3600.0)
    wave_time_limit_s: float = _doc("Solver time per scheduled wave group (s).", 10.0)

    # --- instant dispatch: micro-batches, matcher weights, offers (dispatch) ---------------
    instant_enabled: bool = _doc("Run the instant matcher in the dispatch process.", True)
    instant_batch_interval_s: float = _doc("Longest wait before a micro-batch is matched.", 2.0)
    instant_batch_orders: int = _doc("A micro-batch is matched at once when this many wait.", 20)
    instant_batch_max_orders: int = _doc("Most orders one round matches (oldest first).", 60)
    instant_search_radius_m: float = _doc("Candidate drivers within this of a pickup.", 8000.0)
    instant_max_candidates: int = _doc("Most candidate drivers per pickup (nearest first).", 20)
    instant_stale_position_s: float = _doc(
        "Drivers not heard from for this long are skipped.", 600.0
    )
    instant_offer_timeout_s: float = _doc("Seconds a driver has to answer an offer.", 20.0)
    instant_sweep_interval_s: float = _doc("How often expired offers are looked for.", 1.0)
    instant_pickup_weight: float = _doc("Cost per second of driving to the pickup.", 1.0)
    instant_wait_weight: float = _doc("Cost per second a driver would wait for the food.", 0.2)
    instant_spread_s: float = _doc("Cost (s) per order a driver already carries.", 600.0)
    instant_batch_bonus: float = _doc("Cost bonus per second a batched tour saves.", 1.0)
    instant_age_weight: float = _doc("Cost bonus per second an order has waited.", 0.5)
    instant_max_detour_s: float = _doc("Most a batched order's delivery may be delayed (s).", 480.0)
    instant_min_batch_saving_s: float = _doc("Least tour saving (s) worth a batch.", 60.0)
    instant_max_batch: int = _doc("Most orders one offer batches.", 3)
    instant_max_driver_load: int = _doc(
        "Most orders a driver may carry when offered more (1: only free drivers get offers).", 1
    )
    instant_max_pickup_s: float = _doc(
        "Drivers farther than this drive from a pickup skipped.", 1800.0
    )

    # --- driver guidance: route versions and off-route detection (tracking, dispatch) ------
    off_route_distance_m: float = _doc(
        "A snapped position farther than this from the current leg counts as off the route.", 50.0
    )
    off_route_rejoin_m: float = _doc(
        "An off-route driver is back on the route within this of a leg (hysteresis).", 25.0
    )
    off_route_after_s: float = _doc(
        "Off the route continuously this long (fix times) before the route is recomputed.", 20.0
    )
    off_route_cached_plans: int = _doc(
        "Route geometries each tracking process keeps parsed for off-route checks.", 10_000
    )
    off_route_events_maxlen: int = _doc("Approximate cap on stored off-route events.", 100_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment)."""
        source = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = source.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(hints[f.name], raw, f.name)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            PREFIX + f.name.upper(): _render(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def graph_path(self) -> Path:
        """The ``.osrm`` base path of the built graph."""
        return self.graph_dir / (self.osm_pbf.name.removesuffix(".osm.pbf") + ".osrm")

    def port_of(self, service: str) -> int:
        """gRPC port of a service by name (gateway, tracking, dispatch, pod)."""
        port: int = getattr(self, f"{service}_port")
        return port


def _parse(kind: Any, raw: str, name: str) -> Any:
    try:
        if kind is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting: used by ``lastmile config``."""
    return [
        (PREFIX + f.name.upper(), _render(f.default), f.metadata.get("doc", ""))
        for f in dataclasses.fields(Settings)
    ]
