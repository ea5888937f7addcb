"""The ingest processor: driver location batches from the ping shards to live state, history,
the fleet channel and the position observers.

One consumer group (``tracking``) per shard stream; every tracking process is a consumer
named after its host and pid and reads only the shards it owns (:mod:`tracking.shard_leases`:
one owner per shard, so one driver's batches are never processed by two processes at once).
For each read (up to ``processor_read_count`` entries across its shards) it: decodes the
batches (an unreadable one is set aside in :mod:`tracking.dead_letters`), snaps the fixes to
the road (per driver), advances live state in one pipeline, shows the new positions (one fleet update, then the *publishers*: the customers' fan-out),
writes history in one COPY, XACKs (only after history is written, so a crash replays the
entries, and replays are no-ops), and calls the *observers* (geofences, ETAs, off-route).

Positions are shown before the history write because that write is a round's slowest step
and people watch the map, not the table; publishers must therefore tolerate a replayed round
(it shows the same positions again). Observers step per-driver state and run once per round,
after the write. Entries a previous owner left pending are claimed (XAUTOCLAIM) when a shard
is taken, and those idle in dead consumers every ``processor_claim_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lastmile.driver.v1 import driver_pb2
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2
from prometheus_client import Counter, Histogram

from core import topics
from core.bus import Bus, StreamEntry
from core.db import Database
from core.geo import LatLng
from core.roads import RoadNetwork
from core.settings import Settings
from tracking import dead_letters
from tracking.history import History
from tracking.live_state import LiveState
from tracking.positions import Fix, PositionObserver, PositionUpdate
from tracking.shard_leases import ShardLeases
from tracking.snapping import Snapper

log = logging.getLogger(__name__)

GROUP = "tracking"
RETRY_S = 1.0
FIXES = Counter("lastmile_tracking_fixes_processed_total", "Fixes written to live state+history.")
BATCH_FIXES = Histogram(
    "lastmile_tracking_batch_fixes",
    "Fixes per location batch (stream entry).",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
ROUND_ENTRIES = Histogram(
    "lastmile_tracking_round_entries",
    "Stream entries handled per processing round.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500),
)
DELAY = Histogram(
    "lastmile_tracking_ingest_delay_seconds",
    "Gateway receive to processed (live state and history written).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STEP_SECONDS = Histogram(
    "lastmile_tracking_round_step_seconds",
    "Time of each step of a processing round: snap, live_state, history, ack, fleet, and each"
    " position observer by name. Where a slow round's time goes (docs/runbook.md).",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BAD_ENTRIES = Counter(
    "lastmile_tracking_bad_entries_total",
    "Unreadable ping entries set aside in the dead-letter stream.",
)
# Children bound once: observed several times per round.
_STEPS = {
    step: STEP_SECONDS.labels(step) for step in ("snap", "live_state", "history", "ack", "fleet")
}


def consumer_name() -> str:
    """This process's consumer name in the groups: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def shard_streams(settings: Settings) -> list[str]:
    """Every ping shard stream."""
    return [topics.ping_stream(shard) for shard in range(settings.ingest_shards)]


def decode(entry: StreamEntry) -> list[Fix]:
    """The fixes of one stream entry (raises on a malformed entry)."""
    driver = entry.fields[b"driver"].decode()
    tenant = entry.fields.get(b"tenant", b"").decode()
    received = dt.datetime.fromtimestamp(int(entry.fields[b"received_ms"]) / 1000, dt.UTC)
    batch = driver_pb2.LocationBatch.FromString(entry.fields[b"data"])
    return [
        Fix(
            driver_id=driver,
            at=f.captured_at.ToDatetime(tzinfo=dt.UTC),
            position=LatLng(f.position.lat, f.position.lng),
            accuracy_m=f.accuracy_m,
            speed_mps=f.speed_mps,
            heading_deg=f.heading_deg,
            received_at=received,
            tenant_id=tenant,
        )
        for f in batch.fixes
    ]


class Processor:
    """The processing loop as a host component; see the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        database: Database,
        roads: RoadNetwork | None,
        observers: Sequence[PositionObserver] = (),
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._database = database
        self._snapper = Snapper(roads, settings.snap_mode, settings.snap_max_distance_m)
        self._publishers: list[PositionObserver] = []
        self._observers = list(observers)
        self._consumer = consumer_name()
        self._leases = ShardLeases(
            bus, shard_streams(settings), self._consumer, settings.processor_lease_s
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.history: History | None = None
        self.live: LiveState | None = None

    def add_publisher(self, publisher: PositionObserver) -> None:
        """Call ``publisher`` with every processed batch as soon as live state has it, before
        the history write (before ``start``); it may see a replayed batch again."""
        self._publishers.append(publisher)

    def add_observer(self, observer: PositionObserver) -> None:
        """Call ``observer`` once with every processed batch, after the history write (before
        ``start``)."""
        self._observers.append(observer)

    def register(self, server: object) -> None:
        """No servicer."""

    async def start(self) -> None:
        """Create the groups and start the loop."""
        self.history = History(self._database.pool, self._settings)
        self.live = LiveState(self._bus.redis)
        for stream in shard_streams(self._settings):
            await self._bus.ensure_group(stream, GROUP, "0")
        self._task = asyncio.create_task(self._run(), name="tracking-processor")

    async def stop(self) -> None:
        """Finish the batch in hand (written and acked), then stop reading."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self._settings.shutdown_grace_s + 5)
            except TimeoutError:
                log.warning("processor did not stop in time; unacked entries will replay")
            self._task = None
        with contextlib.suppress(Exception):
            await self._leases.leave()

    async def _run(self) -> None:
        claim_every = self._settings.processor_claim_interval_s
        next_claim = next_lease = 0.0
        pending: list[StreamEntry] = []
        while not self._stopping.is_set():
            entries: list[StreamEntry] = []
            try:
                if time.monotonic() >= next_lease:
                    # Between rounds: a shard given back here has nothing read and unwritten.
                    ownership = await self._leases.refresh()
                    next_lease = time.monotonic() + self._leases.renew_every_s
                    # A failed round's entries of a shard given back are its new owner's now.
                    pending = [e for e in pending if e.stream in ownership.held]
                    pending += await self._claim(ownership.taken, 0)
                held = self._leases.held
                if held and time.monotonic() >= next_claim:
                    pending += await self._claim(held, self._settings.processor_claim_idle_ms)
                    next_claim = time.monotonic() + claim_every
                if pending:
                    entries, pending = pending, []
                elif not held:  # more processors than shards: stand by
                    await self._idle(self._leases.renew_every_s)
                else:
                    entries = await self._bus.read_group(
                        held,
                        GROUP,
                        self._consumer,
                        count=self._settings.processor_read_count,
                        block_ms=min(
                            self._settings.processor_block_ms,
                            int(self._leases.renew_every_s * 1000),
                        ),
                    )
                if entries:
                    await self.process(entries)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The entries stay pending (not acked) and are retried after a pause.
                log.exception("processing round failed, retrying")
                pending = entries + pending
                await self._idle(RETRY_S)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _claim(self, streams: Sequence[str], min_idle_ms: int) -> list[StreamEntry]:
        """Entries of ``streams`` pending at least ``min_idle_ms`` with other consumers: a
        previous owner's unfinished round (claimed at once when a shard is taken), or entries
        idle in dead consumers."""
        if not streams:
            return []
        claimed = await self._bus.claim_idle(streams, GROUP, self._consumer, min_idle_ms)
        if claimed:
            log.info("claimed pending entries", extra={"count": len(claimed)})
        return claimed

    async def process(self, entries: Sequence[StreamEntry]) -> None:
        """Handle one round of entries end to end (see the module docstring)."""
        assert self.live is not None and self.history is not None
        ROUND_ENTRIES.observe(len(entries))
        by_driver: dict[str, list[Fix]] = defaultdict(list)
        received_ms: list[int] = []
        unreadable: list[tuple[StreamEntry, str]] = []
        for entry in entries:
            try:
                fixes = decode(entry)
            except Exception as exc:
                BAD_ENTRIES.inc()
                log.exception("unreadable ping entry set aside", extra={"entry": entry.entry_id})
                unreadable.append((entry, f"{type(exc).__name__}: {exc}"))
                continue
            BATCH_FIXES.observe(len(fixes))
            received_ms.append(int(entry.fields[b"received_ms"]))
            for fix in fixes:
                by_driver[fix.driver_id].append(fix)
        # Kept before anything is acked: the gateway promised the driver these fixes.
        await dead_letters.bury(self._bus, unreadable, self._settings.ping_dead_letters_max)
        all_fixes: list[Fix] = []
        latest: list[Fix] = []
        per_driver: dict[str, tuple[Fix, ...]] = {}
        with _STEPS["snap"].time():
            for fixes in by_driver.values():
                fixes.sort(key=lambda f: f.at)
                snapped = self._snapper.snap(fixes)
                done = tuple(_with_snap(f, s) for f, s in zip(fixes, snapped, strict=True))
                per_driver[done[0].driver_id] = done
                all_fixes += done
                latest.append(done[-1])
        with _STEPS["live_state"].time():
            states = await self.live.advance(latest)
        updates = _updates(latest, states, per_driver)
        if updates:
            with _STEPS["fleet"].time():
                await self._publish_fleet(latest, states)
            await self._notify(self._publishers, updates)
        with _STEPS["history"].time():
            await self.history.write(all_fixes)
        with _STEPS["ack"].time():
            await self._ack(entries)
        now_ms = time.time() * 1000
        for ms in received_ms:
            DELAY.observe(max(0.0, now_ms - ms) / 1000)
        FIXES.inc(len(all_fixes))
        if updates:
            await self._notify(self._observers, updates)

    async def _publish_fleet(
        self, latest: Sequence[Fix], states: Sequence[tracking_pb2.DriverState | None]
    ) -> None:
        """One WatchFleet update per tenant, on that tenant's channel only."""
        by_tenant: dict[str, list[tracking_pb2.DriverState]] = defaultdict(list)
        for fix, state in zip(latest, states, strict=True):
            if state is not None:
                by_tenant[fix.tenant_id].append(state)
        for tenant_id, changed in by_tenant.items():
            update = fleet_service_pb2.WatchFleetResponse(drivers=changed)
            await self._bus.publish(topics.fleet_channel(tenant_id), update.SerializeToString())

    async def _ack(self, entries: Sequence[StreamEntry]) -> None:
        ids: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            ids[entry.stream].append(entry.entry_id)
        pipe = self._bus.redis.pipeline(transaction=False)
        for stream, entry_ids in ids.items():
            pipe.xack(stream, GROUP, *entry_ids)
        await pipe.execute()

    async def _notify(
        self, observers: Sequence[PositionObserver], updates: Sequence[PositionUpdate]
    ) -> None:
        for observer in observers:
            try:
                with STEP_SECONDS.labels(type(observer).__name__).time():
                    await observer.on_positions(updates)
            except Exception:
                log.exception("position observer failed", extra={"observer": repr(observer)})


def _updates(
    latest: Sequence[Fix], states: Sequence[Any], per_driver: dict[str, tuple[Fix, ...]]
) -> list[PositionUpdate]:
    """The drivers whose live position advanced (a state came back), for observers."""
    return [
        PositionUpdate(
            driver_id=fix.driver_id,
            at=fix.at,
            position=fix.position,
            snapped=fix.snapped,
            speed_mps=fix.speed_mps,
            heading_deg=fix.heading_deg,
            status=int(state.status),
            current_order_id=state.current_order_id,
            current_stop_id=state.current_stop_id,
            fixes=per_driver[fix.driver_id],
            tenant_id=fix.tenant_id,
        )
        for fix, state in zip(latest, states, strict=True)
        if state is not None
    ]


def _with_snap(fix: Fix, snapped: LatLng | None) -> Fix:
    if snapped is None:
        return fix
    return Fix(
        fix.driver_id,
        fix.at,
        fix.position,
        fix.accuracy_m,
        fix.speed_mps,
        fix.heading_deg,
        fix.received_at,
        snapped,
        fix.tenant_id,
    )
