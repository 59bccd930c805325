"""`relink bench migrator-sweep`: migration throughput against concurrency and provider latency.

The same whole path as `relink bench migrator` (switch and outbox rows in
PostgreSQL, `relink relay`, Kafka, `relink migrator`, the simulator in its own
process), reusing that bench's steps, at a few points with small tutor counts
so the sweep takes minutes. Recorded under `migrator.sweep`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from devtools.bench.results import record

SESSIONS_PER_TUTOR = 20
# Long enough at each point for the migrator to reach its pace (seconds at the bound rate).
SECONDS_AT_BOUND = 4.0


def sessions_for(concurrency: int, latency_ms: int, *, max_sessions: int) -> int:
    """Sessions to migrate at one point: ~4 s of work at the bound rate, within [100, max]."""
    bound = math.inf if latency_ms == 0 else concurrency / (latency_ms / 1000)
    wanted = max_sessions if math.isinf(bound) else int(bound * SECONDS_AT_BOUND)
    return max(SESSIONS_PER_TUTOR * 5, min(max_sessions, wanted))


def run(
    *,
    concurrencies: Sequence[int] = (1, 10, 50, 100, 200),
    latencies_ms: Sequence[int] = (0, 50, 100, 200, 500),
    fixed_latency_ms: int = 100,
    fixed_concurrency: int = 100,
    max_sessions: int = 1000,
) -> dict[str, Any]:
    """Measure both sweeps and record them as `migrator.sweep`; return the sweep."""
    from devtools.bench import migrator as migrator_bench

    with migrator_bench.bench_target(concurrency=fixed_concurrency) as target:
        relay = migrator_bench._spawn("relay", target.env)
        try:
            by_concurrency = [
                _point(target, c, fixed_latency_ms, max_sessions=max_sessions)
                for c in concurrencies
            ]
            by_latency = _latency_points(
                target, fixed_concurrency, latencies_ms, max_sessions=max_sessions
            )
        finally:
            migrator_bench._stop(relay)
    sweep = {
        "by_concurrency": by_concurrency,
        "by_latency_ms": by_latency,
        "latency_ms": fixed_latency_ms,
        "concurrency": fixed_concurrency,
        "sessions_per_tutor": SESSIONS_PER_TUTOR,
        "note": (
            "whole path per point (relay, Kafka, one relink migrator process, simulator in its "
            "own process); x is the swept value; sessions sized to ~4 s at the bound rate "
            f"(100..{max_sessions}); sessions/s from the first switch row's creation to the "
            "last switch's completion, so small points include the pipeline's ramp-up"
        ),
        "command": "relink bench migrator-sweep",
    }
    record("migrator", {"sweep": sweep})
    return sweep


def _point(target: Any, concurrency: int, latency_ms: int, *, max_sessions: int) -> dict[str, Any]:
    """One migrator process at `concurrency`, one run at `latency_ms`."""
    from devtools.bench import migrator as migrator_bench

    env = dict(target.env)
    env["RELINK_MIGRATOR_CONCURRENCY"] = str(concurrency)
    env["RELINK_PROVIDER_MAX_CONNECTIONS"] = str(concurrency)
    migrator = migrator_bench._spawn("migrator", env)
    try:
        time.sleep(5)  # the Faust worker joins its group
        return _measure(target, concurrency, latency_ms, max_sessions=max_sessions, x=concurrency)
    finally:
        migrator_bench._stop(migrator)


def _latency_points(
    target: Any, concurrency: int, latencies_ms: Sequence[int], *, max_sessions: int
) -> list[dict[str, Any]]:
    """One migrator process at `concurrency`, one run per latency."""
    from devtools.bench import migrator as migrator_bench

    env = dict(target.env)
    env["RELINK_MIGRATOR_CONCURRENCY"] = str(concurrency)
    env["RELINK_PROVIDER_MAX_CONNECTIONS"] = str(concurrency)
    migrator = migrator_bench._spawn("migrator", env)
    try:
        time.sleep(5)
        return [
            _measure(target, concurrency, latency, max_sessions=max_sessions, x=latency)
            for latency in latencies_ms
        ]
    finally:
        migrator_bench._stop(migrator)


def _measure(
    target: Any, concurrency: int, latency_ms: int, *, max_sessions: int, x: int
) -> dict[str, Any]:
    from devtools.bench import migrator as migrator_bench

    migrator_bench.set_latency(target.sim_url, latency_ms)
    sessions = sessions_for(concurrency, latency_ms, max_sessions=max_sessions)
    tutors = max(1, sessions // SESSIONS_PER_TUTOR)
    ids = migrator_bench._seed(target, tutors=tutors, sessions=SESSIONS_PER_TUTOR)
    migrator_bench._switch(target, ids)
    migrator_bench._wait_final(target, ids, timeout_s=900)
    first, last, moved = migrator_bench._span(target, ids)
    rate = round(moved / max((last - first).total_seconds(), 1e-3), 1)
    bound = None if latency_ms == 0 else round(concurrency / (latency_ms / 1000))
    print(
        f"migrator sweep: concurrency {concurrency}, latency {latency_ms} ms: "
        f"{rate} sessions/s ({moved} sessions, bound {bound or 'none'})",
        flush=True,
    )
    return {
        "x": x,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "sessions": moved,
        "sessions_per_s": rate,
        "bound_sessions_per_s": bound,
    }
