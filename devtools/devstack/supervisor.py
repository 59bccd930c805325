"""`relink run`: the devstack and every relink process under one supervisor.

Each process runs as `python -m services.cli <command>` in its own process
group, its output prefixed with its name. A process that dies is restarted
with backoff; Ctrl-C (or SIGTERM) stops every process, then the parts of the
devstack this run started.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

from devtools.devstack.processes import stop_pid

COLORS = itertools.cycle(["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan"])


@dataclass
class ProcessSpec:
    """One supervised process."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Supervised:
    spec: ProcessSpec
    color: str
    proc: subprocess.Popen[str] | None = None
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    """Starts, watches, restarts and stops a set of processes."""

    def __init__(self, specs: list[ProcessSpec], *, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.children = [Supervised(spec, next(COLORS)) for spec in specs]
        self.stopping = threading.Event()
        self.width = max((len(s.name) for s in specs), default=8)

    def _print(self, child: Supervised, line: str) -> None:
        prefix = f"[{child.color}]{child.spec.name:>{self.width}} |[/{child.color}] "
        self.console.print(prefix, end="")
        self.console.out(line.rstrip("\n"), highlight=False)

    def _start(self, child: Supervised) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **child.spec.env}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *child.spec.command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(child, child.proc), daemon=True).start()

    def _pump(self, child: Supervised, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._print(child, line)

    def run(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Run until interrupted; restart what dies, with backoff."""
        for child in self.children:
            self._start(child)
        if on_ready is not None:
            on_ready()
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    code = child.proc.returncode
                    child.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                    self._print(child, f"exited with {code}; restarting in {delay:.1f}s")
                    child.proc = None
                    child.next_start = now + delay
                if child.proc is None and now >= child.next_start:
                    self._start(child)
            self.stopping.wait(0.5)

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what lingers."""
        self.stopping.set()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                stop_pid(child.proc.pid, timeout=10)


# Every process `make run` supervises, in start order: the product's four and
# the workshop's two stand-ins, all `relink` subcommands.
PROCESSES = [
    ProcessSpec("provider-sim", ["provider-sim"]),
    ProcessSpec("smtp-sink", ["smtp-sink"]),
    ProcessSpec("gateway", ["gateway"]),
    ProcessSpec("relay", ["relay"]),
    ProcessSpec("migrator", ["migrator"]),
    ProcessSpec("notifier", ["notifier"]),
]


def run_stack(*, seed: bool = True, console: Console | None = None) -> None:
    """Bring up the devstack and every process; block until Ctrl-C; stop it all."""
    from devtools.devstack.stack import Devstack
    from services.core.db import migrate
    from services.core.kafka import create_topics
    from services.core.settings import DEVSTACK_PROVIDER_SIM_PORT, CommonSettings

    console = console or Console(highlight=False)
    stack = Devstack()
    console.print("[bold]relink[/bold]: starting the devstack (PostgreSQL, Kafka)…")
    report = stack.up()
    env = stack.env()
    os.environ.update(env)
    # The simulator's Zoom app sends its event notifications (app removed,
    # meeting deleted at Zoom) to the gateway, as Zoom does to relink's app.
    from services.core.settings import DEVSTACK_GATEWAY_PORT

    os.environ.setdefault(
        "RELINK_PROVIDER_SIM_ZOOM_WEBHOOK_URL",
        f"http://127.0.0.1:{os.environ.get('RELINK_GATEWAY_PORT', DEVSTACK_GATEWAY_PORT)}"
        "/webhooks/zoom",
    )
    # The simulator keeps its accounts, grants and meetings under the devstack
    # home, as PostgreSQL keeps relink's connections: a restart leaves both sides
    # agreeing (`relink dev wipe` clears both).
    os.environ.setdefault("RELINK_PROVIDER_SIM_STATE_FILE", str(stack.provider_sim_state_file))
    migrate.upgrade(stack.database_url)
    specs = PROCESSES
    cluster = stack.cluster
    if cluster is None:
        create_topics(CommonSettings())
    else:
        # RELINK_DEVSTACK_KAFKA_BROKERS=3: the ACLs too, and each process its own user
        from services.migrator.settings import MigratorSettings
        from services.notifier.settings import NotifierSettings

        stack.create_topics(
            CommonSettings().topic_prefix,
            migrator_group=MigratorSettings().faust_app_id,
            notifier_group=NotifierSettings().group_id,
        )
        users = {"gateway", "relay", "migrator", "notifier"}
        specs = [
            ProcessSpec(p.name, p.command, {**p.env, **cluster.security.env(p.name)})
            if p.name in users
            else p
            for p in PROCESSES
        ]
    # The workshop runs beside the product, so every process and the seed are there.
    commands = {p.command[0] for p in specs} | {"seed"}
    supervisor = Supervisor(specs, console=console)

    def _terminate(signum: int, frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, _terminate)
    # explicitly too: a shell that starts us in the background ignores SIGINT,
    # and Python then never turns it into KeyboardInterrupt
    signal.signal(signal.SIGINT, _terminate)

    def _where() -> None:
        if seed and "seed" in commands:
            # after the simulator answers, so the demo sessions get real meetings
            _wait_for_http(f"http://127.0.0.1:{DEVSTACK_PROVIDER_SIM_PORT}/_admin/health")
            subprocess.run([sys.executable, "-m", "services.cli", "seed", "demo"], check=False)
        console.rule("relink is running")
        for line in where_to_go(commands):
            console.print(line)
        console.print("Ctrl-C stops everything.")
        console.rule()

    try:
        supervisor.run(on_ready=_where)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("\nstopping…")
        supervisor.stop()
        stack.down(parts=tuple(report.started))
        console.print("stopped.")


def _wait_for_http(url: str, *, timeout: float = 30.0) -> bool:
    """Poll a URL until it answers 2xx (or give up quietly)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def where_to_go(commands: set[str]) -> list[str]:
    """The addresses a person opens after `make run`."""
    from services.core.settings import (
        DEVSTACK_GATEWAY_PORT,
        DEVSTACK_PROVIDER_SIM_PORT,
    )

    lines = []
    if "gateway" in commands:
        base = f"http://127.0.0.1:{DEVSTACK_GATEWAY_PORT}"
        lines.append(
            f"  video-setup page:      {base}/tutor/video-setup  (sign in at {base}/dev/sign-in)"
        )
    if "provider-sim" in commands:
        base = f"http://127.0.0.1:{DEVSTACK_PROVIDER_SIM_PORT}"
        lines.append(f"  simulator's meetings:  {base}/_admin/meetings")
    if "smtp-sink" in commands:
        lines.append("  mail inbox:            http://127.0.0.1:18025/")
    lines.append(f"  PostgreSQL:            {os.environ.get('DATABASE_URL', '')}")
    lines.append(f"  Kafka:                 {os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '')}")
    return lines
