"""Every relink process started for real, on free ports, with its own database and topics.

Used by `relink soak` and by the end-to-end tests: the same processes a user
runs with `make run`, each in its own process group with its log in a file,
so a fault test can SIGKILL one and start it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devtools.devstack.processes import pid_alive, stop_pid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port(name: str) -> int:
    """`RELINK_SOAK_<NAME>_PORT` if set, else a port the OS says is free."""
    value = os.environ.get(f"RELINK_SOAK_{name}_PORT")
    return int(value) if value else free_port()


@dataclass
class Ports:
    """The ports the stack's own processes listen on (the devstack's are set apart).

    Each is a free port the OS picks, so two stacks never collide; set
    RELINK_SOAK_SIM_PORT, _GATEWAY_PORT, _SMTP_PORT, _INBOX_PORT, _RELAY_METRICS_PORT,
    _MIGRATOR_METRICS_PORT or _NOTIFIER_METRICS_PORT to fix one. The gateway serves
    its /metrics on its own port; the other three each have one.
    """

    sim: int = field(default_factory=lambda: _port("SIM"))
    gateway: int = field(default_factory=lambda: _port("GATEWAY"))
    smtp: int = field(default_factory=lambda: _port("SMTP"))
    inbox: int = field(default_factory=lambda: _port("INBOX"))
    relay_metrics: int = field(default_factory=lambda: _port("RELAY_METRICS"))
    migrator_metrics: int = field(default_factory=lambda: _port("MIGRATOR_METRICS"))
    notifier_metrics: int = field(default_factory=lambda: _port("NOTIFIER_METRICS"))

    def metrics_targets(self) -> dict[str, str]:
        """Each relink process's name and the host:port of its /metrics."""
        return {
            "gateway": f"127.0.0.1:{self.gateway}",
            "relay": f"127.0.0.1:{self.relay_metrics}",
            "migrator": f"127.0.0.1:{self.migrator_metrics}",
            "notifier": f"127.0.0.1:{self.notifier_metrics}",
        }


# Start order: the simulator and the mail sink before what calls them.
PROCESS_NAMES = ("provider-sim", "smtp-sink", "gateway", "relay", "migrator", "notifier")
KILLABLE = ("relay", "migrator", "notifier")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    starts: int = 1


class ProcessStack:
    """The relink processes around one database and one topic prefix."""

    def __init__(
        self,
        *,
        database_url: str,
        kafka_bootstrap: str,
        topic_prefix: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        names: tuple[str, ...] = PROCESS_NAMES,
        process_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """`process_env`: variables for one process only (e.g. its own Kafka user)."""
        self.ports = Ports()
        self.workdir = workdir
        self.names = names
        self.processes: dict[str, Process] = {}
        self.process_env = process_env or {}
        workdir.mkdir(parents=True, exist_ok=True)
        sim = f"http://127.0.0.1:{self.ports.sim}"
        self.gateway_url = f"http://127.0.0.1:{self.ports.gateway}"
        self.sim_url = sim
        self.inbox_url = f"http://127.0.0.1:{self.ports.inbox}"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RELINK_DEV_MODE": "true",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RELINK_TOPIC_PREFIX": topic_prefix,
            "RELINK_PROVIDER_SIM_PORT": str(self.ports.sim),
            "RELINK_ZOOM_AUTH_BASE": f"{sim}/zoom",
            "RELINK_ZOOM_API_BASE": f"{sim}/zoom/v2",
            "RELINK_GOOGLE_AUTH_BASE": f"{sim}/google",
            "RELINK_GOOGLE_TOKEN_BASE": f"{sim}/google",
            "RELINK_GOOGLE_API_BASE": f"{sim}/google",
            "RELINK_ZOOM_REDIRECT_URI": f"{self.gateway_url}/oauth/zoom/callback",
            "RELINK_GOOGLE_REDIRECT_URI": f"{self.gateway_url}/oauth/google_meet/callback",
            "RELINK_GATEWAY_PORT": str(self.ports.gateway),
            "RELINK_GATEWAY_PUBLIC_BASE_URL": self.gateway_url,
            "RELINK_NOTIFIER_GATEWAY_PUBLIC_URL": self.gateway_url,
            "RELINK_SMTP_HOST": "127.0.0.1",
            "RELINK_SMTP_PORT": str(self.ports.smtp),
            "RELINK_SMTP_SINK_PORT": str(self.ports.smtp),
            "RELINK_SMTP_SINK_HTTP_PORT": str(self.ports.inbox),
            "RELINK_SMTP_SINK_FOLDER": str(workdir / "mail"),
            "RELINK_RELAY_METRICS_PORT": str(self.ports.relay_metrics),
            "RELINK_MIGRATOR_METRICS_PORT": str(self.ports.migrator_metrics),
            "RELINK_NOTIFIER_METRICS_PORT": str(self.ports.notifier_metrics),
            "RELINK_MIGRATOR_APP_ID": f"{topic_prefix}relink-migrator",
            "RELINK_MIGRATOR_DATADIR": str(workdir / "migrator-data"),
            "RELINK_NOTIFIER_GROUP_ID": f"{topic_prefix}relink-notifier",
            # crashes are frequent here: let the group notice a dead member soon
            "RELINK_NOTIFIER_SESSION_TIMEOUT_S": "10",
            **(extra_env or {}),
        }

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    @property
    def logs(self) -> list[Path]:
        return [self.log_path(name) for name in self.names]

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli", name],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **self.process_env.get(name, {})},
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()

    def start(self, *, timeout: float = 60.0) -> None:
        """Start every process and wait until the HTTP ones answer."""
        for name in self.names:
            self.processes[name] = Process(name, self._spawn(name), self.log_path(name))
            if name == "provider-sim":
                self._wait_http(f"{self.sim_url}/_admin/health", name, timeout)
            elif name == "smtp-sink":
                self._wait_http(f"{self.inbox_url}/messages.json", name, timeout)
            elif name == "gateway":
                self._wait_http(f"{self.gateway_url}/healthz", name, timeout)

    def _wait_http(self, url: str, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name].proc
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({process.returncode}); log: {self.log_path(name)}\n"
                    + self.log_path(name).read_text(errors="replace")[-3000:]
                )
            try:
                if httpx.get(url, timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer {url} within {timeout}s")

    def kill(self, name: str) -> None:
        """SIGKILL a process (fault injection); `restart` brings it back."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        process = self.processes[name]
        if process.proc.poll() is None:
            stop_pid(process.proc.pid, timeout=20)
            process.proc.wait(timeout=30)
        process.proc = self._spawn(name)
        process.starts += 1

    def alive(self, name: str) -> bool:
        return pid_alive(self.processes[name].proc.pid)

    def revive_dead(self) -> list[str]:
        """Start again whatever died on its own (as a supervisor would); return their names."""
        revived = []
        for name, process in self.processes.items():
            if process.proc.poll() is not None:
                process.proc = self._spawn(name)
                process.starts += 1
                revived.append(name)
        return revived

    def stop(self) -> None:
        """SIGTERM every process, SIGKILL what lingers."""
        for process in reversed(list(self.processes.values())):
            if process.proc.poll() is None:
                stop_pid(process.proc.pid, timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=5)
