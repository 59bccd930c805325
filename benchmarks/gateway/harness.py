"""`relink bench gateway`: OAuth callback latency and throughput under concurrent tutors.

What runs, all real and on loopback:
* `relink gateway` as a separate process (uvicorn, RELINK_DEV_MODE=false: real
  secrets, production settings), on a fresh database of its own;
* `relink provider-sim` as a separate process, answering the token exchange
  and the account lookup of every callback;
* this process as the tutors' browsers: for each point it prepares codes
  (start + consent, untimed), then `concurrency` tutors each send their
  callbacks one after the other, every callback a switch (Zoom <-> Google Meet),
  timed from request to the 303 response.

Points: every tutor has 0, 1,000 and 10,000 future sessions. The callback
must not depend on that number: it never reads the sessions (the migrator does).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import psycopg
from rich.console import Console

from services.bench.results import record
from services.core.db import migrate
from services.core.settings import CommonSettings, normalize_database_url
from services.core.tokens import generate_key
from services.oauth_gateway.auth import issue_token

POINTS = (0, 1_000, 10_000)
console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh migrated database on the configured server, dropped afterwards."""
    url = normalize_database_url(CommonSettings().database_url)
    admin = url.replace("postgresql+psycopg", "postgresql")
    name = f"relink_bench_gw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    bench_url = f"{url.rpartition('/')[0]}/{name}"
    try:
        migrate.upgrade(bench_url)
        yield bench_url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def process(args: list[str], env: dict[str, str], *, ready_url: str) -> Iterator[None]:
    """A `relink` subcommand as its own process, up once `ready_url` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"relink {args[0]} exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"relink {args[0]} did not get ready")
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
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        for tid in ids:
            conn.execute(
                "INSERT INTO users (id, role, name, email) VALUES (%s, 'tutor', %s, %s)",
                (tid, f"Bench tutor {tid.hex[:6]}", f"bench-{tid.hex[:10]}@example.com"),
            )
        conn.execute(
            "INSERT INTO users (id, role, name, email) VALUES (%s, 'student', 's', %s)",
            (uuid.UUID(int=1), "bench-student@example.com"),
        )
    return ids


def add_future_sessions(database_url: str, tutors: list[uuid.UUID], *, up_to: int) -> None:
    """Give every tutor `up_to` future SCHEDULED sessions (adding what is missing)."""
    student = uuid.UUID(int=1)
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
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


async def prepare_callback(http: httpx.AsyncClient, token: str, provider: str, email: str) -> str:
    """Start + consent at the simulator (untimed): the callback path with a fresh code."""
    start = await http.get(f"/oauth/{provider}/start", headers={"Authorization": f"Bearer {token}"})
    assert start.status_code == 302, start.text
    url = start.headers["location"]
    page = await http.get(url)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None, page.text[:300]
    fields = {
        name: unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text
        )
    }
    fields |= {"email": email, "decision": "allow"}
    answer = await http.post(urljoin(url, unescape(action.group(1))), data=fields)
    back = urlsplit(answer.headers["location"])
    assert "code" in parse_qs(back.query), back.query
    return f"{back.path}?{back.query}"


class Tutor:
    def __init__(self, tid: uuid.UUID, secret: str) -> None:
        self.id = tid
        self.email = f"bench-{tid.hex[:10]}@example.com"
        self.token = issue_token(tid, role="tutor", secret=secret, ttl_s=24 * 3600)
        self.provider = "zoom"

    def next_provider(self) -> str:
        self.provider = "google_meet" if self.provider == "zoom" else "zoom"
        return self.provider


async def run_point(base: str, tutors: list[Tutor], *, per_tutor: int) -> tuple[list[float], float]:
    """Each tutor sends `per_tutor` switching callbacks in turn, all tutors at once."""
    limits = httpx.Limits(
        max_connections=len(tutors) * 2, max_keepalive_connections=len(tutors) * 2
    )
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        plans: dict[uuid.UUID, list[str]] = {}
        for tutor in tutors:
            plans[tutor.id] = [
                await prepare_callback(http, tutor.token, tutor.next_provider(), tutor.email)
                for _ in range(per_tutor)
            ]
        latencies: list[float] = []

        async def one_tutor(tutor: Tutor) -> None:
            headers = {"Authorization": f"Bearer {tutor.token}"}
            for path in plans[tutor.id]:
                began = time.perf_counter()
                response = await http.get(path, headers=headers)
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 303, response.text[:500]
                assert "switch=" in response.headers["location"], response.headers["location"]

        began = time.perf_counter()
        await asyncio.gather(*(one_tutor(t) for t in tutors))
        elapsed = time.perf_counter() - began
    return latencies, len(latencies) / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(*, tutors: int = 20, per_tutor: int = 25) -> dict[str, Any]:
    """Measure and record `gateway` figures."""
    sim_port, gw_port = free_port(), free_port()
    sim_base, gw_base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    session_secret = secrets.token_urlsafe(32)
    zoom_secret, google_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RELINK_")}
    figures: dict[str, Any] = {
        "callback_p50_ms": {},
        "callback_p99_ms": {},
        "callback_rps": {},
        "concurrent_tutors": tutors,
        "callbacks_per_point": tutors * per_tutor,
    }
    with scratch_database() as db:
        sim_env = base_env | {
            "RELINK_PROVIDER_SIM_PORT": str(sim_port),
            "RELINK_PROVIDER_SIM_ZOOM_CLIENT_SECRET": zoom_secret,
            "RELINK_PROVIDER_SIM_GOOGLE_CLIENT_SECRET": google_secret,
        }
        gw_env = base_env | {
            "DATABASE_URL": db,
            "RELINK_DEV_MODE": "false",
            "RELINK_LOG_LEVEL": "WARNING",
            "RELINK_TOKEN_KEYS": generate_key("bench"),
            "RELINK_GATEWAY_SESSION_SECRET": session_secret,
            "RELINK_GATEWAY_PORT": str(gw_port),
            "RELINK_GATEWAY_PUBLIC_BASE_URL": gw_base,
            "RELINK_GATEWAY_DB_POOL_SIZE": str(max(10, tutors)),
            "RELINK_ZOOM_CLIENT_SECRET": zoom_secret,
            "RELINK_GOOGLE_CLIENT_SECRET": google_secret,
            "RELINK_ZOOM_AUTH_BASE": f"{sim_base}/zoom",
            "RELINK_ZOOM_API_BASE": f"{sim_base}/zoom/v2",
            "RELINK_GOOGLE_AUTH_BASE": f"{sim_base}/google",
            "RELINK_GOOGLE_TOKEN_BASE": f"{sim_base}/google",
            "RELINK_GOOGLE_API_BASE": f"{sim_base}/google",
            "RELINK_ZOOM_REDIRECT_URI": f"{gw_base}/oauth/zoom/callback",
            "RELINK_GOOGLE_REDIRECT_URI": f"{gw_base}/oauth/google_meet/callback",
        }
        with (
            process(["provider-sim"], sim_env, ready_url=f"{sim_base}/_admin/health"),
            process(["gateway"], gw_env, ready_url=f"{gw_base}/readyz"),
        ):
            people = [Tutor(t, session_secret) for t in seed_tutors(db, tutors)]
            # first connections (Zoom) and a warm-up round, untimed
            asyncio.run(_first_connections(gw_base, people))
            asyncio.run(run_point(gw_base, people, per_tutor=2))
            for point in POINTS:
                add_future_sessions(db, [t.id for t in people], up_to=point)
                latencies, rps = asyncio.run(run_point(gw_base, people, per_tutor=per_tutor))
                key = str(point)
                figures["callback_p50_ms"][key] = round(statistics.median(latencies) * 1000, 1)
                figures["callback_p99_ms"][key] = round(percentile(latencies, 0.99) * 1000, 1)
                figures["callback_rps"][key] = round(rps, 1)
                console.print(
                    f"{point:>6} future sessions/tutor: p50 {figures['callback_p50_ms'][key]} ms, "
                    f"p99 {figures['callback_p99_ms'][key]} ms, {figures['callback_rps'][key]} "
                    f"callbacks/s ({len(latencies)} callbacks, {tutors} tutors at once)"
                )
    figures["setup"] = (
        "relink gateway (uvicorn, 1 worker, RELINK_DEV_MODE=false) and relink provider-sim as "
        "separate processes; every callback a switch (state check, code exchange, account "
        "lookup, one transaction with switch and outbox rows); client on the same machine"
    )
    figures["command"] = f"relink bench gateway --tutors {tutors} --per-tutor {per_tutor}"
    record("gateway", figures)
    return figures


async def _first_connections(base: str, people: list[Tutor]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for tutor in people:
            path = await prepare_callback(http, tutor.token, "zoom", tutor.email)
            response = await http.get(path, headers={"Authorization": f"Bearer {tutor.token}"})
            assert response.status_code == 303, response.text[:500]
