"""The inline baseline as its own uvicorn process, on the test's database and a simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devtools.provider_sim.server import SimHandle, free_port, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings


@dataclass
class BaselineProcess:
    base_url: str
    sim: SimHandle


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    handle = run_in_thread(port=0, settings=ProviderSimSettings(port=0, seed=3))
    yield handle
    handle.stop()


@pytest.fixture
def baseline(database_url: str, sim: SimHandle) -> Iterator[BaselineProcess]:
    """`python -m devtools.baseline` pointed at the simulator, up once /readyz answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELINK_")} | {
        "DATABASE_URL": database_url,
        "RELINK_LOG_LEVEL": "WARNING",
        "RELINK_BASELINE_PORT": str(port),
        "RELINK_ZOOM_AUTH_BASE": f"{sim.base_url}/zoom",
        "RELINK_ZOOM_API_BASE": f"{sim.base_url}/zoom/v2",
        "RELINK_GOOGLE_AUTH_BASE": f"{sim.base_url}/google",
        "RELINK_GOOGLE_TOKEN_BASE": f"{sim.base_url}/google",
        "RELINK_GOOGLE_API_BASE": f"{sim.base_url}/google",
        "RELINK_ZOOM_REDIRECT_URI": f"{base}/oauth/zoom/callback",
        "RELINK_GOOGLE_REDIRECT_URI": f"{base}/oauth/google_meet/callback",
        "RELINK_GOOGLE_CONFERENCE_POLL_INTERVAL_S": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.baseline"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"baseline exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("baseline did not get ready")
            time.sleep(0.2)
        yield BaselineProcess(base_url=base, sim=sim)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
