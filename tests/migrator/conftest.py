"""Fixtures of the migrator tests: the simulator, the test factory, the relay, `relink migrator`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle, run_in_thread
from devtools.provider_sim.settings import ProviderSimSettings
from devtools.smtp_sink.sink import SmtpSink
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from services.providers import ProviderClient, build_client
from tests.migrator.factory import Factory
from tests.notifier.conftest import notifier_env, running_notifier
from tests.providers.conftest import SimAdmin, sim_settings
from tests.relay.conftest import read_topic, relay_settings, running_relay

__all__ = ["read_topic"]


@pytest.fixture(scope="session")
def migrator_sim() -> Iterator[SimHandle]:
    """One simulator for the migrator tests, on a free port."""
    handle = run_in_thread(port=0, settings=ProviderSimSettings(port=0, seed=11))
    yield handle
    handle.stop()


@pytest.fixture
async def sim_admin(migrator_sim: SimHandle) -> AsyncIterator[SimAdmin]:
    async with httpx.AsyncClient(base_url=migrator_sim.base_url, timeout=10) as http:
        yield SimAdmin(http)
        (await http.post("/_admin/reset")).raise_for_status()


@pytest.fixture
async def factory(
    engine: Engine, settings: CommonSettings, migrator_sim: SimHandle
) -> AsyncIterator[Factory]:
    clients: dict[str, ProviderClient] = {
        name: build_client(name, settings=sim_settings(migrator_sim))
        for name in ("zoom", "google_meet")
    }
    yield Factory(engine, settings, clients)
    for client in clients.values():
        await client.aclose()


@pytest.fixture
def tutor_mail(relink_env: dict[str, str], tmp_path: Path) -> Iterator[SmtpSink]:
    """The real notifier (in a thread) sending to an SMTP sink: the mail a tutor receives."""
    with SmtpSink(folder=tmp_path / "mail") as sink:
        env = notifier_env(relink_env, sink)
        ours: dict[str, Any] = {
            k: v for k, v in env.items() if k.startswith(("RELINK_", "DATA", "KAFKA"))
        }
        with running_notifier(NotifierSettings(**ours)):
            yield sink


@pytest.fixture
def relay(settings: CommonSettings) -> Iterator[Any]:
    """The real outbox relay, in a thread: switch events in, session events out."""
    with running_relay(relay_settings(settings)) as running:
        yield running


def sim_env(sim: SimHandle) -> dict[str, str]:
    """Provider settings pointing a subprocess at the simulator, with short waits."""
    return {
        "RELINK_ZOOM_AUTH_BASE": sim.zoom_base,
        "RELINK_ZOOM_API_BASE": f"{sim.zoom_base}/v2",
        "RELINK_GOOGLE_AUTH_BASE": sim.google_base,
        "RELINK_GOOGLE_TOKEN_BASE": sim.google_base,
        "RELINK_GOOGLE_API_BASE": sim.google_base,
        "RELINK_PROVIDER_BACKOFF_BASE_S": "0.01",
        "RELINK_PROVIDER_BACKOFF_CAP_S": "0.05",
        "RELINK_PROVIDER_MAX_RETRY_WAIT_S": "0",
        "RELINK_PROVIDER_MAX_ATTEMPTS": "2",
        "RELINK_GOOGLE_CONFERENCE_POLL_INTERVAL_S": "0.01",
    }


class MigratorProcess:
    """`relink migrator` as a real subprocess, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MigratorProcess:
        relink = os.path.join(os.path.dirname(sys.executable), "relink")
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [relink, "migrator"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def migrator_env(
    relink_env: dict[str, str], migrator_sim: SimHandle, tmp_path: Path
) -> dict[str, str]:
    return {
        **relink_env,
        **sim_env(migrator_sim),
        "RELINK_MIGRATOR_DATADIR": str(tmp_path / "faust"),
        "RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2",
        "RELINK_MIGRATOR_CLAIM_LEASE_S": "5",
        "RELINK_MIGRATOR_BACKOFF_BASE_S": "0.05",
        "RELINK_MIGRATOR_BACKOFF_CAP_S": "0.2",
        "RELINK_MIGRATOR_MAX_ATTEMPTS": "3",
        "RELINK_MIGRATOR_SWEEP_INTERVAL_S": "2",
    }


@pytest.fixture
def start_migrator(
    migrator_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., MigratorProcess]]:
    """Start `relink migrator` processes (stopped at the end; output shown on failure)."""
    started: list[MigratorProcess] = []

    def start(**extra: str) -> MigratorProcess:
        n = len(started)
        process = MigratorProcess({**migrator_env, **extra}, tmp_path / f"migrator-{n}.log")
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()
        sys.stdout.write(process.output()[-6000:])


def wait_for(
    condition: Callable[[], Any], *, timeout_s: float = 90.0, what: str = "", every: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(every)


def switch_row(engine: Engine, switch_id: object) -> Any:
    """The switch as the tutor asked for it, with the migrator's progress (PENDING before it)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT r.id, r.tutor_id, r.from_provider, r.to_provider, r.generation, "
                "r.rollback_requested_at, p.id IS NOT NULL AS handled, "
                "coalesce(p.state, 'PENDING') AS state, "
                "coalesce(p.sessions_total, 0) AS sessions_total, "
                "coalesce(p.sessions_migrated, 0) AS sessions_migrated, "
                "coalesce(p.sessions_failed, 0) AS sessions_failed, "
                "coalesce(p.created_at, r.requested_at) AS created_at, p.started_at, "
                "p.completed_at, coalesce(p.rollback_deadline, r.rollback_deadline) "
                "AS rollback_deadline, p.rolled_back_at, p.old_meetings_cleaned_at, "
                "p.waiting_until, p.waiting_reason "
                "FROM switch_requests r LEFT JOIN provider_switches p ON p.id = r.id "
                "WHERE r.id = :id"
            ),
            {"id": switch_id},
        ).one()


def session_rows(engine: Engine, ids: list[Any]) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT * FROM sessions WHERE id = ANY(:ids) ORDER BY scheduled_start_at"),
                {"ids": ids},
            )
        )


def migration_rows(engine: Engine, switch_id: object) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT * FROM session_migrations WHERE switch_id = :id "
                    "ORDER BY scheduled_start_at"
                ),
                {"id": switch_id},
            )
        )


def settled(engine: Engine, switch_id: object) -> Any:
    """The switch row once it is in a final state, else None."""
    row = switch_row(engine, switch_id)
    return row if row.state in ("COMPLETED", "COMPLETED_WITH_FAILURES", "SUPERSEDED") else None
