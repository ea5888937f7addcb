"""The tracking benchmark's fleet and pipeline probes: drivers and their orders put straight
into PostgreSQL, the rows stored in location history, and what the tracking processors still
owe on the ping streams."""

from __future__ import annotations

import hashlib
import random

import asyncpg

from core import topics
from core.auth import new_tracking_token, tracking_token_digest
from core.bus import connect_redis
from core.settings import Settings

PICKED_UP = 6
# Land around Valletta, Floriana, Msida, Gzira: orders' pickups and drop-offs lie here.
AREA = ((35.880, 35.905), (14.470, 14.505))
TENANT = "bench"


def _point(rng: random.Random) -> tuple[float, float]:
    return rng.uniform(*AREA[0]), rng.uniform(*AREA[1])


async def seed(settings: Settings, count: int) -> list[tuple[str, str]]:
    """``count`` drivers, each with one order on its way (PICKED_UP), straight into the
    database: (driver id, the order's tracking token) each. The load signs the drivers' own
    tokens, as the simulator does."""
    rng = random.Random(7)
    rows, orders, out = [], [], []
    for i in range(count):
        driver = f"bd-{i}"
        token = new_tracking_token()
        lat, lng = _point(rng)
        d_lat, d_lng = _point(rng)
        rows.append((driver, TENANT, f"Driver {i}"))
        orders.append(
            (
                f"bo-{i}",
                TENANT,
                f"k{i}",
                hashlib.sha256(b"%d" % i).hexdigest(),
                1,
                PICKED_UP,
                "{}",
                lat,
                lng,
                "{}",
                d_lat,
                d_lng,
                tracking_token_digest(token),
                driver,
            )
        )
        out.append((driver, token))
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.copy_records_to_table(
            "drivers", records=rows, columns=["driver_id", "tenant_id", "name"]
        )
        await conn.copy_records_to_table(
            "orders",
            records=orders,
            columns=[
                "order_id",
                "tenant_id",
                "idempotency_key",
                "request_digest",
                "kind",
                "status",
                "pickup_address",
                "pickup_lat",
                "pickup_lng",
                "drop_off_address",
                "drop_off_lat",
                "drop_off_lng",
                "tracking_token_digest",
                "driver_id",
            ],
        )
    finally:
        await conn.close()
    return out


async def backlog(settings: Settings) -> int:
    """Ping shards the tracking group has not caught up with: entries not yet delivered to it
    (its last delivered id behind the stream's last id) or delivered and not yet acked."""
    client = connect_redis(settings)
    try:
        behind = 0
        for shard in range(settings.ingest_shards):
            stream = topics.ping_stream(shard)
            info = {_text(k): v for k, v in (await client.xinfo_stream(stream)).items()}
            last = _text(info["last-generated-id"])
            for group in await client.xinfo_groups(stream):
                fields = {_text(k): v for k, v in group.items()}
                delivered = _text(fields["last-delivered-id"])
                behind += int(fields.get("pending") or 0) + (delivered != last)
        return behind
    finally:
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
