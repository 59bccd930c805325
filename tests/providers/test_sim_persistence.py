"""The simulator's world survives a restart, as Zoom's and Google's do.

`make run` stopped and started again used to leave relink holding refresh
tokens and join links the fresh simulator had never heard of ("Invalid
Token!", 404). With a state file the simulator comes back with its accounts,
grants, tokens and meetings; `relink dev wipe` forgets them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtools.devstack.settings import DevstackSettings
from devtools.devstack.stack import Devstack
from devtools.provider_sim.persistence import StateFile
from devtools.provider_sim.server import SimHandle, free_port, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings
from devtools.provider_sim.state import SimState
from services.providers import (
    AuthorizationRevokedError,
    ProviderClient,
    TokenExpiredError,
    build_client,
)
from tests.providers.conftest import connect, sim_settings
from tests.providers.test_meetings import booking


def _start(state_file: Path, port: int = 0) -> SimHandle:
    return run_in_thread(port, settings=ProviderSimSettings(port=port, state_file=state_file))


class Sims:
    """Simulators started by a test, all stopped at its end."""

    def __init__(self) -> None:
        self.handles: list[SimHandle] = []

    def start(self, state_file: Path, port: int = 0) -> SimHandle:
        handle = _start(state_file, port)
        self.handles.append(handle)
        return handle


@pytest.fixture
async def sims() -> AsyncIterator[Sims]:
    started = Sims()
    yield started
    for handle in started.handles:
        handle.stop()


def _port(handle: SimHandle) -> int:
    return int(handle.base_url.rsplit(":", 1)[1])


async def test_accounts_tokens_and_meetings_survive_a_restart(
    sims: Sims, tmp_path: Path, email: str
) -> None:
    state_file = tmp_path / "provider-sim" / "state.pickle"
    first = sims.start(state_file)
    async with (
        build_client("zoom", settings=sim_settings(first)) as zoom,
        build_client("google_meet", settings=sim_settings(first)) as google,
    ):
        zoom_tokens = await connect(zoom, email)
        google_tokens = await connect(google, email)
        zoom_meeting = await zoom.create_meeting(zoom_tokens.access_token, booking("s-zoom"))
        google_meeting = await google.create_meeting(
            google_tokens.access_token, booking("s-google")
        )
    first.stop()
    assert state_file.is_file()

    # the same address, as `make run` uses: the join links stay valid
    second = sims.start(state_file, port=_port(first))
    async with (
        build_client("zoom", settings=sim_settings(second)) as zoom,
        build_client("google_meet", settings=sim_settings(second)) as google,
    ):
        # Zoom's rotating refresh token issued before the restart still refreshes
        assert zoom_tokens.refresh_token is not None
        refreshed = await zoom.refresh(zoom_tokens.refresh_token)
        assert (await zoom.account(refreshed.access_token)).email == email
        assert await zoom.get_meeting(refreshed.access_token, zoom_meeting.external_id) == (
            zoom_meeting
        )
        # and it was spent: rotation goes on across the restart
        with pytest.raises(AuthorizationRevokedError):
            await zoom.refresh(zoom_tokens.refresh_token)

        # Google's access token from before the restart still answers, and the event reads back
        assert await google.get_meeting(google_tokens.access_token, google_meeting.external_id) == (
            google_meeting
        )
        assert zoom_meeting.join_url is not None and google_meeting.join_url is not None
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(zoom_meeting.join_url)).status_code == 200
            assert (await browser.get(google_meeting.join_url)).status_code == 200

        # One grant behind the refresh and the access token, as before the
        # restart: revoking through one revokes the other.
        assert google_tokens.refresh_token is not None
        await google.revoke(google_tokens.refresh_token)
        with pytest.raises((TokenExpiredError, AuthorizationRevokedError)):
            await google.account(google_tokens.access_token)


async def _zoom_connected(handle: SimHandle, email: str) -> tuple[ProviderClient, str]:
    client = build_client("zoom", settings=sim_settings(handle))
    tokens = await connect(client, email)
    assert tokens.refresh_token is not None
    return client, tokens.refresh_token


async def test_devstack_wipe_forgets_the_simulated_world(
    sims: Sims, tmp_path: Path, email: str
) -> None:
    stack = Devstack(DevstackSettings(RELINK_DEVSTACK_HOME=tmp_path / "devstack"))
    state_file = stack.provider_sim_state_file
    assert state_file.is_relative_to(stack.home)
    first = sims.start(state_file)
    client, refresh_token = await _zoom_connected(first, email)
    await client.aclose()
    first.stop()
    assert state_file.is_file()

    stack.wipe()

    assert not state_file.exists()
    second = sims.start(state_file)
    async with build_client("zoom", settings=sim_settings(second)) as zoom:
        with pytest.raises(AuthorizationRevokedError):
            await zoom.refresh(refresh_token)


def test_fields_added_since_the_save_get_their_defaults_and_process_parts_are_skipped(
    tmp_path: Path,
) -> None:
    settings = ProviderSimSettings()
    old = SimState(settings)
    account = old.account("zoom", "ada@example.com")
    account.meetings["1"] = {"id": 1, "topic": "kept"}
    # as if saved by an older version without these fields
    del account.__dict__["pending_reads"]
    del old.__dict__["issued_tokens"]
    # a process-bound part someone added without declaring it runtime-only
    old.lock = threading.Lock()  # type: ignore[attr-defined]
    path = tmp_path / "state.pickle"
    StateFile(old, path).save()

    new = SimState(settings)
    assert StateFile(new, path).load() is True

    restored = new.accounts[("zoom", "ada@example.com")]
    assert restored.meetings == {"1": {"id": 1, "topic": "kept"}}
    assert restored.pending_reads == {}  # the dataclass field's default
    assert new.issued_tokens == []  # the fresh state's attribute
    assert not hasattr(new, "lock")
    assert new.settings is settings  # never taken from the file


def test_an_unreadable_file_is_set_aside_and_the_world_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "state.pickle"
    path.write_bytes(pickle.dumps({"format": 999}))
    state = SimState(ProviderSimSettings())
    assert StateFile(state, path).load() is False
    assert state.accounts == {}
    assert not path.exists()
    assert (tmp_path / "state.pickle.unreadable").is_file()


async def test_the_provider_sim_process_saves_on_sigterm(tmp_path: Path, email: str) -> None:
    # `relink run` stops the simulator with SIGTERM; what the last requests
    # changed must be on disk even if the debounced save had no time to run.
    state_file = tmp_path / "state.pickle"
    port = free_port()
    env = {
        **os.environ,
        "RELINK_PROVIDER_SIM_PORT": str(port),
        "RELINK_PROVIDER_SIM_STATE_FILE": str(state_file),
        # no save after requests within the test: only the one on SIGTERM
        "RELINK_PROVIDER_SIM_STATE_SAVE_DELAY_S": "600",
    }

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "provider-sim"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/_admin/health").is_success:
                    return proc
            assert proc.poll() is None, "provider-sim exited"
            time.sleep(0.1)
        proc.kill()
        raise AssertionError("provider-sim did not answer")

    handle_like = SimHandle(base_url=f"http://127.0.0.1:{port}", server=None, thread=None)  # type: ignore[arg-type]
    proc = spawn()
    try:
        async with build_client("zoom", settings=sim_settings(handle_like)) as zoom:
            tokens = await connect(zoom, email)
            assert not state_file.exists()  # nothing saved yet (the delay is 600 s)
            proc.send_signal(signal.SIGTERM)
            # (uvicorn re-raises the signal once it has shut down)
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert state_file.is_file()

    proc = spawn()
    try:
        async with build_client("zoom", settings=sim_settings(handle_like)) as zoom:
            assert tokens.refresh_token is not None
            refreshed = await zoom.refresh(tokens.refresh_token)
            assert (await zoom.account(refreshed.access_token)).email == email
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
