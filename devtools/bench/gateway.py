"""`relink bench gateway`: OAuth callback latency under concurrent tutors, relink vs inline.

What runs, all real and on loopback, in one run:
* the devstack's PostgreSQL (started if needed; `RELINK_DEVSTACK_*` pick which),
  in a fresh database of this run's own;
* `relink provider-sim` as a separate process, answering every code exchange
  and account lookup, and the baseline's meeting creates;
* `relink gateway` as a separate process (uvicorn, RELINK_DEV_MODE=false);
* the baseline (`python -m devtools.baseline`): the brief's original callback,
  which creates a meeting and updates the row for every future session before
  it answers, as a separate uvicorn process on the same simulator and server;
* this process as the tutors' browsers: for each point it prepares codes
  (start + consent, untimed), then the tutors send their callbacks at once,
  each tutor one after the other, every callback a switch (Zoom <-> Google
  Meet), timed from request to the 303 response.

Points: every tutor has 0, 1,000 and 10,000 future sessions. relink's
callback must not depend on that number (the migrator moves the sessions);
the baseline's grows with it, so it gets fewer callbacks at the big points.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from rich.console import Console

from devtools.bench.consent import allow_consent
from devtools.bench.results import record
from devtools.devstack.settings import DevstackSettings
from services.core.db import migrate
from services.core.tokens import generate_key
from services.oauth_gateway.adapters.web.auth import issue_token

POINTS = (0, 1_000, 10_000)
console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


@contextmanager
def devstack_server() -> Iterator[str]:
    """The devstack's PostgreSQL (started if not running, stopped again if we started it)."""
    from devtools.devstack.stack import Devstack

    stack = Devstack(DevstackSettings())
    report = stack.up()
    try:
        yield stack.database_url
    finally:
        stack.down(parts=tuple(report.started))


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh migrated database on the server, dropped afterwards."""
    name = f"relink_bench_gw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    bench_url = f"{server_url.rpartition('/')[0]}/{name}"
    try:
        migrate.upgrade(bench_url)
        yield bench_url
    finally:
        with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def process(module: list[str], env: dict[str, str], *, ready_url: str) -> Iterator[None]:
    """`python -m <module...>` as its own process, up once `ready_url` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module[-1]} exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{module[-1]} did not get ready")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def seed_tutors(database_url: str, tutors: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(tutors)]
    with psycopg.connect(_libpq(database_url)) as conn:
        for tid in ids:
            conn.execute(
                "INSERT INTO users (id, role, name, email) VALUES (%s, 'tutor', %s, %s)",
                (tid, f"Bench tutor {tid.hex[:6]}", f"bench-{tid.hex[:10]}@example.com"),
            )
        conn.execute(
            "INSERT INTO users (id, role, name, email) VALUES (%s, 'student', 's', %s) "
            "ON CONFLICT DO NOTHING",
            (uuid.UUID(int=1), "bench-student@example.com"),
        )
    return ids


def add_future_sessions(database_url: str, tutors: list[uuid.UUID], *, up_to: int) -> None:
    """Give every tutor `up_to` future SCHEDULED sessions (adding what is missing)."""
    student = uuid.UUID(int=1)
    with psycopg.connect(_libpq(database_url)) as conn:
        for tid in tutors:
            have = conn.execute(
                "SELECT count(*) FROM sessions WHERE tutor_id = %s", (tid,)
            ).fetchone()[0]  # type: ignore[index]
            if have >= up_to:
                continue
            booking = uuid.uuid4()
            conn.execute(
                "INSERT INTO bookings (id, tutor_id, student_id, topic, duration_minutes) "
                "VALUES (%s, %s, %s, 'bench', 60) ON CONFLICT DO NOTHING",
                (booking, tid, student),
            )
            conn.execute(
                "INSERT INTO sessions (id, tutor_id, student_id, booking_id, provider, "
                "meeting_external_id, join_url, scheduled_start_at, duration_minutes) "
                "SELECT gen_random_uuid(), %s, %s, %s, 'zoom', 'm' || g, "
                "'https://zoom.example/j/' || g, now() + g * interval '1 hour', 60 "
                "FROM generate_series(%s::int, %s::int) g",
                (tid, student, booking, have + 1, up_to),
            )
        conn.execute("ANALYZE sessions")


@dataclass
class Tutor:
    id: uuid.UUID
    headers: dict[str, str] = field(default_factory=dict)
    provider: str = "zoom"

    @property
    def email(self) -> str:
        return f"bench-{self.id.hex[:10]}@example.com"

    def next_provider(self) -> str:
        self.provider = "google_meet" if self.provider == "zoom" else "zoom"
        return self.provider


@dataclass(frozen=True)
class App:
    """One callback under test: where it runs and how a tutor starts its OAuth flow."""

    name: str
    base: str
    # The gateway signs tutors in with a bearer token; the baseline takes a parameter.
    tutor_param: bool

    def start_request(self, tutor: Tutor, provider: str) -> tuple[str, dict[str, str]]:
        if self.tutor_param:
            return f"/oauth/{provider}/start?tutor_id={tutor.id}", {}
        return f"/oauth/{provider}/start", tutor.headers


async def prepare_callback(http: httpx.AsyncClient, app: App, tutor: Tutor, provider: str) -> str:
    """Start + consent at the simulator (untimed): the callback path with a fresh code."""
    path, headers = app.start_request(tutor, provider)
    start = await http.get(path, headers=headers)
    assert start.status_code == 302, start.text
    return await allow_consent(http, start.headers["location"], email=tutor.email)


async def run_point(
    app: App,
    tutors: list[Tutor],
    *,
    per_tutor: int,
    expect: str,
    timeout_s: float = 60,
) -> tuple[list[float], float]:
    """Each tutor sends `per_tutor` switching callbacks in turn, all tutors at once."""
    limits = httpx.Limits(
        max_connections=len(tutors) * 2, max_keepalive_connections=len(tutors) * 2
    )
    async with httpx.AsyncClient(base_url=app.base, timeout=timeout_s, limits=limits) as http:
        plans: dict[uuid.UUID, list[str]] = {}
        for tutor in tutors:
            plans[tutor.id] = [
                await prepare_callback(http, app, tutor, tutor.next_provider())
                for _ in range(per_tutor)
            ]
        latencies: list[float] = []

        async def one_tutor(tutor: Tutor) -> None:
            for path in plans[tutor.id]:
                began = time.perf_counter()
                response = await http.get(path, headers=tutor.headers)
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 303, response.text[:500]
                location = response.headers["location"]
                assert expect in location, f"{app.name}: {location} lacks {expect}"

        began = time.perf_counter()
        await asyncio.gather(*(one_tutor(t) for t in tutors))
        elapsed = time.perf_counter() - began
    return latencies, len(latencies) / elapsed


async def first_connections(app: App, people: list[Tutor]) -> None:
    """Every tutor connects Zoom once (no switch yet), untimed."""
    async with httpx.AsyncClient(base_url=app.base, timeout=60) as http:
        for tutor in people:
            path = await prepare_callback(http, app, tutor, "zoom")
            response = await http.get(path, headers=tutor.headers)
            assert response.status_code == 303, response.text[:500]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def baseline_callbacks_per_tutor(point: int, per_tutor: int) -> int:
    """Fewer inline callbacks where each one migrates thousands of sessions one by one."""
    if point >= 10_000:
        return 1
    if point >= 1_000:
        return max(1, min(2, per_tutor))
    return per_tutor


def run(
    *, tutors: int = 20, per_tutor: int = 25, baseline_tutors: int = 5, baseline: bool = True
) -> dict[str, Any]:
    """Measure and record `gateway` (and `baseline`) figures."""
    sim_port, gw_port, bl_port = free_port(), free_port(), free_port()
    sim_base = f"http://127.0.0.1:{sim_port}"
    gateway = App("gateway", f"http://127.0.0.1:{gw_port}", tutor_param=False)
    inline = App("baseline", f"http://127.0.0.1:{bl_port}", tutor_param=True)
    session_secret = secrets.token_urlsafe(32)
    zoom_secret, google_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RELINK_")}
    token_keys = generate_key("bench")
    figures: dict[str, Any] = {
        "callback_p50_ms": {},
        "callback_p99_ms": {},
        "callback_rps": {},
        "concurrent_tutors": tutors,
        "callbacks_per_point": tutors * per_tutor,
    }
    inline_figures: dict[str, Any] = {
        "inline_callback_p50_ms": {},
        "inline_callback_p99_ms": {},
        "inline_sessions_per_s_per_callback": {},
        "samples": {},
        "concurrent_tutors": {},
    }
    with devstack_server() as server, scratch_database(server) as db:
        sim_env = base_env | {
            "RELINK_PROVIDER_SIM_PORT": str(sim_port),
            "RELINK_PROVIDER_SIM_ZOOM_CLIENT_SECRET": zoom_secret,
            "RELINK_PROVIDER_SIM_GOOGLE_CLIENT_SECRET": google_secret,
            # Only the baseline creates meetings here: no daily cap, and Meet
            # conferences ready at once (no 0.5 s poll per session) — both in its favour.
            "RELINK_PROVIDER_SIM_ZOOM_DAILY_MEETING_CAP": str(10**9),
            "RELINK_PROVIDER_SIM_GOOGLE_CONFERENCE_PENDING_READS": "0",
        }
        providers_env = {
            "DATABASE_URL": db,
            "RELINK_DEV_MODE": "false",
            "RELINK_LOG_LEVEL": "WARNING",
            "RELINK_TOKEN_KEYS": token_keys,
            "RELINK_ZOOM_CLIENT_SECRET": zoom_secret,
            "RELINK_GOOGLE_CLIENT_SECRET": google_secret,
            "RELINK_ZOOM_AUTH_BASE": f"{sim_base}/zoom",
            "RELINK_ZOOM_API_BASE": f"{sim_base}/zoom/v2",
            "RELINK_GOOGLE_AUTH_BASE": f"{sim_base}/google",
            "RELINK_GOOGLE_TOKEN_BASE": f"{sim_base}/google",
            "RELINK_GOOGLE_API_BASE": f"{sim_base}/google",
        }
        gw_env = (
            base_env
            | providers_env
            | {
                "RELINK_GATEWAY_SESSION_SECRET": session_secret,
                "RELINK_GATEWAY_PORT": str(gw_port),
                "RELINK_GATEWAY_PUBLIC_BASE_URL": gateway.base,
                "RELINK_GATEWAY_DB_POOL_SIZE": str(max(10, tutors)),
                "RELINK_ZOOM_REDIRECT_URI": f"{gateway.base}/oauth/zoom/callback",
                "RELINK_GOOGLE_REDIRECT_URI": f"{gateway.base}/oauth/google_meet/callback",
            }
        )
        bl_env = (
            base_env
            | providers_env
            | {
                "RELINK_BASELINE_PORT": str(bl_port),
                "RELINK_BASELINE_DB_POOL_SIZE": str(max(10, tutors)),
                "RELINK_ZOOM_REDIRECT_URI": f"{inline.base}/oauth/zoom/callback",
                "RELINK_GOOGLE_REDIRECT_URI": f"{inline.base}/oauth/google_meet/callback",
            }
        )
        with (
            process(
                ["services.cli", "provider-sim"], sim_env, ready_url=f"{sim_base}/_admin/health"
            ),
            process(["services.cli", "gateway"], gw_env, ready_url=f"{gateway.base}/readyz"),
        ):
            _measure_gateway(
                db, gateway, figures, tutors=tutors, per_tutor=per_tutor, secret=session_secret
            )
            if baseline:
                with process(["devtools.baseline"], bl_env, ready_url=f"{inline.base}/readyz"):
                    _measure_baseline(
                        db,
                        inline,
                        inline_figures,
                        tutors=tutors,
                        big_tutors=min(baseline_tutors, tutors),
                        per_tutor=per_tutor,
                    )
    figures["setup"] = (
        "relink gateway (uvicorn, 1 worker, RELINK_DEV_MODE=false) and relink provider-sim as "
        "separate processes; every callback a switch (state check, code exchange, account "
        "lookup, one transaction with switch and outbox rows); client on the same machine"
    )
    command = f"relink bench gateway --tutors {tutors} --per-tutor {per_tutor}"
    figures["command"] = command
    record("gateway", figures)
    if baseline:
        _ratios(inline_figures, figures)
        inline_figures["command"] = f"{command} --baseline-tutors {baseline_tutors}"
        inline_figures["note"] = (
            "the brief's callback (devtools/baseline, uvicorn, 1 worker, RELINK_DEV_MODE=false): "
            "state check, code exchange, account lookup, connection upsert, then for each "
            "future session one after the other a meeting create at the simulator and a row "
            "update, then the 303; same run, simulator and PostgreSQL as `gateway`, simulator "
            "at 0 ms latency with Meet conferences ready at once (real providers answer in "
            "~100 ms: 10,000 sessions would take over 16 minutes); at 0 sessions as many "
            "tutors at once as `gateway`, at the big points fewer tutors at once and fewer "
            "callbacks (see concurrent_tutors and samples; p99 of so few is their maximum) — "
            "both in the baseline's favour"
        )
        record("baseline", inline_figures)
    return figures


def _measure_gateway(
    db: str, app: App, figures: dict[str, Any], *, tutors: int, per_tutor: int, secret: str
) -> None:
    people = []
    for tid in seed_tutors(db, tutors):
        token = issue_token(tid, role="tutor", secret=secret, ttl_s=24 * 3600)
        people.append(Tutor(tid, {"Authorization": f"Bearer {token}"}))
    # first connections (Zoom) and a warm-up round, untimed
    asyncio.run(first_connections(app, people))
    asyncio.run(run_point(app, people, per_tutor=2, expect="switch="))
    for point in POINTS:
        add_future_sessions(db, [t.id for t in people], up_to=point)
        latencies, rps = asyncio.run(run_point(app, people, per_tutor=per_tutor, expect="switch="))
        key = str(point)
        figures["callback_p50_ms"][key] = round(statistics.median(latencies) * 1000, 1)
        figures["callback_p99_ms"][key] = round(percentile(latencies, 0.99) * 1000, 1)
        figures["callback_rps"][key] = round(rps, 1)
        console.print(
            f"gateway  {point:>6} future sessions/tutor: p50 {figures['callback_p50_ms'][key]} ms, "
            f"p99 {figures['callback_p99_ms'][key]} ms, {figures['callback_rps'][key]} "
            f"callbacks/s ({len(latencies)} callbacks, {tutors} tutors at once)"
        )
    # the machine may be shared: how busy it was says how far to trust the tail
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)


def _measure_baseline(
    db: str, app: App, figures: dict[str, Any], *, tutors: int, big_tutors: int, per_tutor: int
) -> None:
    everyone = [Tutor(t) for t in seed_tutors(db, tutors)]
    asyncio.run(first_connections(app, everyone))
    asyncio.run(run_point(app, everyone, per_tutor=2, expect="migrated=0"))
    for point in POINTS:
        people = everyone if point == 0 else everyone[:big_tutors]
        add_future_sessions(db, [t.id for t in people], up_to=point)
        count = baseline_callbacks_per_tutor(point, per_tutor)
        latencies, _ = asyncio.run(
            # every callback must report all of the tutor's sessions migrated
            run_point(app, people, per_tutor=count, expect=f"migrated={point}", timeout_s=3600)
        )
        key = str(point)
        figures["concurrent_tutors"][key] = len(people)
        figures["inline_callback_p50_ms"][key] = round(statistics.median(latencies) * 1000, 1)
        figures["inline_callback_p99_ms"][key] = round(percentile(latencies, 0.99) * 1000, 1)
        figures["samples"][key] = len(latencies)
        if point:
            figures["inline_sessions_per_s_per_callback"][key] = round(
                point / statistics.median(latencies), 1
            )
        console.print(
            f"baseline {point:>6} future sessions/tutor: "
            f"p50 {figures['inline_callback_p50_ms'][key]} ms, "
            f"p99 {figures['inline_callback_p99_ms'][key]} ms "
            f"({len(latencies)} callbacks, {len(people)} tutors at once)"
        )
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)


def _ratios(inline: dict[str, Any], gateway: dict[str, Any]) -> None:
    """baseline / relink per point, for p50 and p99 (same run, so the ratio is honest)."""
    for stat in ("p50", "p99"):
        ours = gateway[f"callback_{stat}_ms"]
        theirs = inline[f"inline_callback_{stat}_ms"]
        inline[f"ratio_{stat}"] = {
            key: round(theirs[key] / ours[key], 1) for key in theirs if ours.get(key)
        }
