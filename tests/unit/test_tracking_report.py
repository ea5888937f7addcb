"""The tracking benchmark's report: latency per 5 s of receive time, and the warm-up of a latency
phase shown apart from its steady state."""

from __future__ import annotations

from typing import Any

from bench.tracking_report import markdown, timeline


def test_timeline_buckets_latencies_by_receive_time() -> None:
    start = 1000.0
    samples = [(start + 1, 0.9), (start + 2, 1.1), (start + 6, 0.1), (start + 7, 0.3)]
    assert timeline(samples, start) == [
        {"from_s": 0, "positions": 2, "p50_ms": 1000.0, "p99_ms": 1098.0},
        {"from_s": 5, "positions": 2, "p50_ms": 200.0, "p99_ms": 298.0},
    ]


def _report(phase: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {"nproc": 2, "cpu": "test", "python": "3.12", "fd_limit": 1024},
        "setup": "a test",
        "phases": [phase],
        "peak_rss_mb": {"gateway": 100.0},
    }


def _phase(name: str, p50_ms: float, **extra: Any) -> dict[str, Any]:
    return {
        "phase": name,
        "driver_streams": 10,
        "customer_streams": 10,
        "acked_fixes_per_s": 10,
        "processed_fixes_per_s": 9,
        "customer_latency": {"p50_ms": p50_ms, "p95_ms": 2 * p50_ms, "p99_ms": 3 * p50_ms},
        **extra,
    }


def test_a_latency_phase_shows_its_steady_latency_and_its_warm_up_apart() -> None:
    phase = _phase(
        "latency5",
        100.0,
        customer_latency_warmup={"p50_ms": 900.0, "p95_ms": 2000.0, "p99_ms": 3000.0},
        warmup_s=15.0,
        latency_timeline=[
            {"from_s": 0, "positions": 5, "p50_ms": 800.0, "p99_ms": 3100.0},
            {"from_s": 5, "positions": 5, "p50_ms": 100.0, "p99_ms": 290.0},
        ],
    )
    text = markdown(_report(phase))
    assert "| 100.0 / 200.0 / 300.0 |" in text
    assert "900.0 / 2000.0 / 3000.0 ms during the first 15 s after the ramp" in text
    assert "worst 5 s from 0 s of the phase: p99 3100.0 ms" in text


def test_a_flood_phase_has_no_warm_up_line() -> None:
    text = markdown(_report(_phase("flood1", 1.0)))
    assert "warm-up (" not in text and "| 1.0 / 2.0 / 3.0 |" in text


def test_the_wait_for_a_track_snapshot_is_shown_for_the_phases_that_measured_it() -> None:
    wait = {"p50_ms": 40.0, "p95_ms": 900.0, "p99_ms": 2500.0, "max_ms": 3000.0}
    text = markdown(_report(_phase("latency5", 100.0, track_snapshot_wait=wait)))
    assert "Track stream opened to its snapshot received" in text
    assert "- latency5: p50 / p95 / p99 40.0 / 900.0 / 2500.0 ms" in text
    assert "snapshot received" not in markdown(_report(_phase("flood1", 1.0)))


def test_the_customers_own_loop_lag_is_shown_when_measured() -> None:
    lag = {"p50_ms": 1.5, "p95_ms": 9.0, "p99_ms": 40.0, "max_ms": 120.0}
    text = markdown(_report(_phase("latency5", 100.0, customer_loop_lag=lag)))
    assert "own loop lag" in text and "- latency5: p50 / p99 / max 1.5 / 40.0 / 120.0 ms" in text
    unmeasured = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    assert "own loop lag" not in markdown(_report(_phase("flood1", 1.0)))
    assert "own loop lag" not in markdown(
        _report(_phase("flood1", 1.0, customer_loop_lag=unmeasured))
    )
