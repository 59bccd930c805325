"""`relink bench providers`: meeting creates per second via the client; the simulator's ceiling.

The simulator runs in its own process (`python -m devtools.provider_sim`) so
the client's event loop and the server's do not share one core's time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devtools.provider_sim.server import free_port
from services.providers import (
    MeetingRequest,
    ProviderClient,
    ProviderSettings,
    TokenSet,
    build_client,
    new_pkce_verifier,
)

LATENCIES_MS = (0, 100)
CONCURRENCIES = (1, 10, 100)


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    """The simulator in a child process, with no daily cap to get in the way of volume."""
    env = os.environ | {
        "RELINK_PROVIDER_SIM_PORT": str(port),
        "RELINK_PROVIDER_SIM_ZOOM_DAILY_MEETING_CAP": str(10**9),
    }
    return subprocess.Popen([sys.executable, "-m", "devtools.provider_sim"], env=env)


def wait_until_serving(base_url: str, *, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/_admin/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"provider simulator did not answer at {base_url}")


async def connect(client: ProviderClient, http: httpx.AsyncClient, email: str) -> TokenSet:
    """Click through the consent page as a tutor would (form fields as the page sends them)."""
    verifier = new_pkce_verifier()
    url = client.authorization_url(state="bench", code_verifier=verifier, login_hint=email)
    query = dict(httpx.URL(url).params)
    # Every scope left ticked on Google's granular consent screen.
    form = query | {"email": email, "decision": "allow", "granted_scope": client.scopes.split()}
    answer = await http.post(url.split("?")[0], data=form)
    code = httpx.URL(answer.headers["location"]).params["code"]
    return await client.exchange_code(code, code_verifier=verifier)


async def creates_per_second(
    client: ProviderClient, token: str, *, concurrency: int, seconds: float
) -> float:
    """Meetings created per second by `concurrency` workers looping for `seconds`."""
    start_time = datetime.now(UTC) + timedelta(days=7)
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < deadline:
            request = MeetingRequest(
                switch_id="bench",
                session_id=f"{n}-{i}",
                topic="bench",
                start_time=start_time,
                duration_min=30,
            )
            await client.create_meeting(token, request)
            done += 1
            i += 1

    began = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.monotonic() - began)


async def ceiling(host: str, port: int, *, concurrency: int, seconds: float) -> float:
    """Requests per second the simulator answers on a trivial endpoint.

    Raw HTTP/1.1 keep-alive requests on asyncio streams rather than httpx, so
    the figure is the server's and not the client pool's (see base.py).
    """
    request = f"GET /_admin/health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - began)


async def measure(base_url: str, *, seconds: float) -> dict[str, Any]:
    settings = ProviderSettings.model_validate(
        {
            "zoom_auth_base": f"{base_url}/zoom",
            "zoom_api_base": f"{base_url}/zoom/v2",
            "max_connections": 200,
        }
    )
    figures: dict[str, float] = {}
    async with (
        build_client("zoom", settings=settings) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        tokens = await connect(client, http, f"bench-{uuid.uuid4().hex[:8]}@example.com")
        for latency in LATENCIES_MS:
            faults = {"latency_ms": latency}
            (await http.put(f"{base_url}/_admin/faults/zoom", json=faults)).raise_for_status()
            for concurrency in CONCURRENCIES:
                rate = await creates_per_second(
                    client, tokens.access_token, concurrency=concurrency, seconds=seconds
                )
                figures[f"{latency}ms_c{concurrency}"] = round(rate, 1)
                print(f"zoom create, {latency} ms latency, concurrency {concurrency}: {rate:.1f}/s")
        await http.delete(f"{base_url}/_admin/faults/zoom")
    url = httpx.URL(base_url)
    sim_ceiling = await ceiling(url.host, url.port or 80, concurrency=100, seconds=seconds)
    print(f"simulator ceiling (GET /_admin/health, concurrency 100): {sim_ceiling:.0f} rps")
    return {"create_per_s": figures, "sim_ceiling_rps": round(sim_ceiling, 1)}


def run(*, seconds: float = 3.0) -> dict[str, Any]:
    """Measure and record the providers figures in benchmarks/results.json."""
    from devtools.bench.results import record

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = start_simulator(port)
    try:
        wait_until_serving(base_url)
        figures = asyncio.run(measure(base_url, seconds=seconds))
    finally:
        process.terminate()
        process.wait(timeout=10)
    figures["method"] = (
        "Zoom create_meeting through ZoomClient against the simulator in a separate process, "
        f"{seconds:g} s per point; ceiling = raw keep-alive HTTP/1.1 GETs of /_admin/health "
        "on 100 connections"
    )
    record("providers", figures)
    return figures
