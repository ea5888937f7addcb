"""Proof-confirmation benchmark: ConfirmProof latency for 5 MB JPEG photos through a real pod
process, PostgreSQL and SeaweedFS S3.

Starts its own PostgreSQL and SeaweedFS (temporary dirs, free loopback ports) and one pod
process. Per phase (a number of confirmations kept in flight at once) it seeds orders PICKED_UP
by a driver, uploads one ~5 MB JPEG per order through the pre-signed POST (untimed: that is
the app's upload), then times each ConfirmProof from the client: read back from S3, SHA-256,
image and EXIF checks, the record and its outbox row. Latency is measured "after the upload",
as the budget states (p99 < 1 s).

Bounded: ``--count`` confirmations per phase and ``--seconds`` per phase at most. Prints a
short table, writes bench/results/pod.json. Usage::

    .venv/bin/python -m bench.pod --count 200 --concurrency 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import piexif
from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2, pod_service_pb2, pod_service_pb2_grpc

from core.auth import Role, issue_token
from core.settings import PROJECT_ROOT, Settings
from ops.servers import PostgresServer, SeaweedS3
from ops.servers.process import free_port
from ops.stack import service_process, start_service
from pod.records import timestamp
from tests.integration.pod_support import DOOR, SeededOrder, post_form, seed_order, sha256_hex
from tests.pod_images import exif_bytes, noise_jpeg

RESULTS = PROJECT_ROOT / "bench" / "results" / "pod.json"
PHOTO_BYTES = 5 * 1024 * 1024
TENANT = "bench"
UPLOAD_THREADS = 4


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python, load average when the run started."""
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def photo_for(base: bytes, taken: dt.datetime) -> bytes:
    """The base noise JPEG with this order's EXIF (time, GPS at the door) spliced in."""
    out = io.BytesIO()
    piexif.insert(exif_bytes(taken.replace(microsecond=0), DOOR.lat, DOOR.lng), base, out)
    return out.getvalue()


def _auth(settings: Settings, order: SeededOrder) -> list[tuple[str, str]]:
    token = issue_token(settings, order.driver_id, Role.DRIVER, TENANT)
    return [("authorization", f"Bearer {token}")]


async def prepare(
    client: Any, settings: Settings, conn: Any, base: bytes, count: int
) -> list[tuple[SeededOrder, pod_service_pb2.ConfirmProofRequest]]:
    """Seed ``count`` orders and upload their photos; the confirm requests, ready to send."""
    orders = [
        await seed_order(conn, settings, TENANT, f"bench-drv-{uuid.uuid4().hex[:8]}")
        for _ in range(count)
    ]
    uploads = asyncio.Semaphore(UPLOAD_THREADS)

    async def one(order: SeededOrder) -> tuple[SeededOrder, pod_service_pb2.ConfirmProofRequest]:
        taken = dt.datetime.now(dt.UTC)
        photo = photo_for(base, taken)
        async with uploads:
            form = await client.CreateUploadUrl(
                pod_service_pb2.CreateUploadUrlRequest(
                    order_id=order.order_id,
                    kind=pod_pb2.PROOF_KIND_PHOTO,
                    content_type="image/jpeg",
                    content_length=len(photo),
                ),
                metadata=_auth(settings, order),
            )
            status, body = await asyncio.to_thread(
                post_form, form.upload_url, dict(form.form_fields), photo, "image/jpeg"
            )
        if status not in (200, 201, 204):
            raise RuntimeError(f"upload refused: {status} {body[:200]!r}")
        request = pod_service_pb2.ConfirmProofRequest(
            order_id=order.order_id,
            kind=pod_pb2.PROOF_KIND_PHOTO,
            object_key=form.object_key,
            sha256=sha256_hex(photo),
            captured_at=timestamp(taken),
            position=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng),
        )
        return order, request

    return list(await asyncio.gather(*(one(order) for order in orders)))


async def confirm_all(
    client: Any,
    settings: Settings,
    work: list[tuple[SeededOrder, pod_service_pb2.ConfirmProofRequest]],
    concurrency: int,
    deadline: float,
) -> tuple[list[float], int, float]:
    """Send the confirmations, ``concurrency`` in flight; (latencies s, errors, wall s)."""
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(work))
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal errors
        while queue and time.monotonic() < deadline:
            order, request = queue.pop()
            t0 = time.perf_counter()
            try:
                response = await client.ConfirmProof(
                    request, metadata=_auth(settings, order), timeout=30
                )
                latencies.append(time.perf_counter() - t0)
                if response.proof.flagged:
                    errors += 1  # a clean photo must not be flagged
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def summary(latencies: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in ms (nearest-rank)."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {
        "p50_ms": round(rank(0.50), 1),
        "p95_ms": round(rank(0.95), 1),
        "p99_ms": round(rank(0.99), 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


async def bench(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    """Every phase: prepare, then time the confirmations."""
    # One noise image; each order's photo gets its own EXIF (piexif replaces the block).
    base = noise_jpeg(PHOTO_BYTES, dt.datetime.now(dt.UTC), DOOR.lat, DOOR.lng)
    conn = await asyncpg.connect(settings.database_url)
    phases = []
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{settings.pod_port}") as channel:
            client = pod_service_pb2_grpc.ProofOfDeliveryServiceStub(channel)
            for concurrency in args.concurrency:
                t0 = time.perf_counter()
                work = await prepare(client, settings, conn, base, args.count)
                upload_s = time.perf_counter() - t0
                deadline = time.monotonic() + args.seconds
                latencies, errors, wall = await confirm_all(
                    client, settings, work, concurrency, deadline
                )
                phases.append(
                    {
                        "concurrency": concurrency,
                        "confirmations": len(latencies),
                        "photo_bytes": len(base),
                        "errors_or_flagged": errors,
                        "confirmations_per_s": round(len(latencies) / wall, 1),
                        "upload_phase_s": round(upload_s, 1),
                        **summary(latencies),
                    }
                )
    finally:
        await conn.close()
    return phases


def main() -> None:
    """Start the servers and the pod service, run, print and record."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="confirmations per phase")
    parser.add_argument("--seconds", type=float, default=120.0, help="time cap per phase")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 4],
        help="confirmations in flight, one phase each (comma-separated)",
    )
    args = parser.parse_args()
    facts = machine()
    base = Path(tempfile.mkdtemp(prefix="lastmile-bench-pod-"))
    postgres = PostgresServer(base / "pg", free_port())
    s3 = SeaweedS3(base / "s3", free_port(), "bench", "bench-secret-key")
    process = None
    try:
        postgres.start()
        s3.start()
        settings = Settings.from_env({}).replace(
            host="127.0.0.1",
            pod_port=free_port(),
            metrics_port=0,
            data_dir=base,
            database_url=postgres.dsn,
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
        )
        s3.ensure_bucket(settings.proof_bucket)
        process = service_process("pod", settings, base / "logs")
        start_service(process, f"{settings.host}:{settings.pod_port}")
        phases = asyncio.run(bench(args, settings))
    finally:
        if process is not None:
            process.stop(grace=10.0)
        s3.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "benchmark": "pod",
        "machine": facts,
        "setup": "1 pod process + PostgreSQL + SeaweedFS + load generator on one box, loopback;"
        " latency = ConfirmProof round trip after the upload, 5 MB JPEG with EXIF",
        "budget": "p99 < 1000 ms",
        "phases": phases,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {facts}")
    print(
        f"{'in flight':>9} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'/s':>6}"
    )
    for p in phases:
        print(
            f"{p['concurrency']:>9} {p['confirmations']:>5} {p['p50_ms']:>8} {p['p95_ms']:>8}"
            f" {p['p99_ms']:>8} {p['max_ms']:>8} {p['confirmations_per_s']:>6}"
        )


if __name__ == "__main__":
    main()
