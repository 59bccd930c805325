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
from collections.abc import Callable, Mapping
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


# Every process `make run` supervises, in start order: the product's five and
# the workshop's two stand-ins, all `relink` subcommands.
PROCESSES = [
    ProcessSpec("provider-sim", ["provider-sim"]),
    ProcessSpec("smtp-sink", ["smtp-sink"]),
    ProcessSpec("gateway", ["gateway"]),
    ProcessSpec("relay", ["relay"]),
    ProcessSpec("migrator", ["migrator"]),
    ProcessSpec("notifier", ["notifier"]),
    ProcessSpec("webhooks", ["webhooks"]),
]


@dataclass(frozen=True)
class RunAddresses:
    """Where `relink run`'s processes listen, from the settings in force."""

    gateway_port: int
    provider_sim_port: int
    smtp_port: int
    inbox_port: int
    # /metrics of the relay, the migrator, the notifier and the webhook dispatcher
    # (the gateway's is on its own port)
    relay_metrics_port: int = 0
    migrator_metrics_port: int = 0
    notifier_metrics_port: int = 0
    webhooks_metrics_port: int = 0

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def provider_sim(self) -> str:
        return f"http://127.0.0.1:{self.provider_sim_port}"

    @property
    def inbox(self) -> str:
        return f"http://127.0.0.1:{self.inbox_port}"


def run_addresses(env: Mapping[str, str]) -> RunAddresses:
    """The ports of `relink run`'s processes: each process's own setting, else its default."""
    from devtools.smtp_sink.sink import DEFAULT_HTTP_PORT
    from services.core.settings import (
        DEVSTACK_GATEWAY_PORT,
        DEVSTACK_PROVIDER_SIM_PORT,
        DEVSTACK_SMTP_PORT,
    )

    smtp = env.get("RELINK_SMTP_SINK_PORT") or env.get("RELINK_SMTP_PORT")
    gateway_port = int(env.get("RELINK_GATEWAY_PORT") or DEVSTACK_GATEWAY_PORT)

    def metrics_port(name: str, offset: int) -> int:
        # next to the gateway's port: moving RELINK_GATEWAY_PORT moves a whole stack
        return int(env.get(f"RELINK_{name}_METRICS_PORT") or gateway_port + offset)

    return RunAddresses(
        relay_metrics_port=metrics_port("RELAY", 1),
        migrator_metrics_port=metrics_port("MIGRATOR", 2),
        notifier_metrics_port=metrics_port("NOTIFIER", 3),
        webhooks_metrics_port=metrics_port("WEBHOOKS", 4),
        gateway_port=gateway_port,
        provider_sim_port=int(env.get("RELINK_PROVIDER_SIM_PORT") or DEVSTACK_PROVIDER_SIM_PORT),
        smtp_port=int(smtp or DEVSTACK_SMTP_PORT),
        inbox_port=int(env.get("RELINK_SMTP_SINK_HTTP_PORT") or DEFAULT_HTTP_PORT),
    )


def wiring(where: RunAddresses, *, sim_state_file: str) -> dict[str, str]:
    """The settings that point the processes at one another on those ports.

    Each is a default: a variable already set wins (`setdefault`), so pointing one
    part elsewhere still works, and changing one port moves everyone who talks to it.
    """
    sim, gateway = where.provider_sim, where.gateway
    return {
        "RELINK_ZOOM_AUTH_BASE": f"{sim}/zoom",
        "RELINK_ZOOM_API_BASE": f"{sim}/zoom/v2",
        "RELINK_GOOGLE_AUTH_BASE": f"{sim}/google",
        "RELINK_GOOGLE_TOKEN_BASE": f"{sim}/google",
        "RELINK_GOOGLE_API_BASE": f"{sim}/google",
        "RELINK_ZOOM_REDIRECT_URI": f"{gateway}/oauth/zoom/callback",
        "RELINK_GOOGLE_REDIRECT_URI": f"{gateway}/oauth/google_meet/callback",
        "RELINK_GATEWAY_PUBLIC_BASE_URL": gateway,
        "RELINK_NOTIFIER_GATEWAY_PUBLIC_URL": gateway,
        "RELINK_GATEWAY_PORT": str(where.gateway_port),
        "RELINK_PROVIDER_SIM_PORT": str(where.provider_sim_port),
        "RELINK_SMTP_PORT": str(where.smtp_port),
        "RELINK_SMTP_SINK_PORT": str(where.smtp_port),
        "RELINK_SMTP_SINK_HTTP_PORT": str(where.inbox_port),
        "RELINK_RELAY_METRICS_PORT": str(where.relay_metrics_port),
        "RELINK_MIGRATOR_METRICS_PORT": str(where.migrator_metrics_port),
        "RELINK_NOTIFIER_METRICS_PORT": str(where.notifier_metrics_port),
        "RELINK_WEBHOOKS_METRICS_PORT": str(where.webhooks_metrics_port),
        # The simulator's Zoom app sends its event notifications (app removed,
        # meeting deleted at Zoom) to the gateway, as Zoom does to relink's app.
        "RELINK_PROVIDER_SIM_ZOOM_WEBHOOK_URL": f"{gateway}/webhooks/zoom",
        # The simulator keeps its accounts, grants and meetings under the devstack
        # home, as PostgreSQL keeps relink's connections: a restart leaves both sides
        # agreeing (`relink dev wipe` clears both).
        "RELINK_PROVIDER_SIM_STATE_FILE": sim_state_file,
    }


def run_stack(*, seed: bool = True, console: Console | None = None) -> None:
    """Bring up the devstack and every process; block until Ctrl-C; stop it all."""
    from devtools.devstack.stack import Devstack
    from services.core.db import migrate
    from services.core.kafka import create_topics
    from services.core.settings import CommonSettings

    console = console or Console(highlight=False)
    stack = Devstack()
    console.print("[bold]relink[/bold]: starting the devstack (PostgreSQL, Kafka)…")
    report = stack.up()
    os.environ.update(stack.env())
    where = run_addresses(os.environ)
    for key, value in wiring(where, sim_state_file=str(stack.provider_sim_state_file)).items():
        os.environ.setdefault(key, value)
    migrate.upgrade(stack.database_url)
    specs = PROCESSES
    cluster = stack.cluster
    if cluster is None:
        create_topics(CommonSettings())
    else:
        # RELINK_DEVSTACK_KAFKA_BROKERS=3: the ACLs too, and each process its own user
        from devtools.devstack.cluster import SERVICE_USERS
        from services.migrator.settings import MigratorSettings
        from services.notifier.settings import NotifierSettings
        from services.webhooks.settings import WebhooksSettings

        stack.create_topics(
            CommonSettings().topic_prefix,
            migrator_group=MigratorSettings().faust_app_id,
            notifier_group=NotifierSettings().group_id,
            webhooks_group=WebhooksSettings().group_id,
        )
        specs = [
            ProcessSpec(p.name, p.command, {**p.env, **cluster.security.env(p.name)})
            if p.name in SERVICE_USERS
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
            _wait_for_http(f"{where.provider_sim}/_admin/health")
            subprocess.run([sys.executable, "-m", "services.cli", "seed", "demo"], check=False)
        console.rule("relink is running")
        for line in where_to_go(commands, where, env=os.environ):
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


def where_to_go(commands: set[str], where: RunAddresses, *, env: Mapping[str, str]) -> list[str]:
    """The addresses a person opens after `make run`, from the settings in force."""
    lines = []
    if "gateway" in commands:
        base = where.gateway
        lines.append(
            f"  video-setup page:      {base}/tutor/video-setup  (sign in at {base}/dev/sign-in)"
        )
    if "provider-sim" in commands:
        lines.append(f"  simulator's meetings:  {where.provider_sim}/_admin/meetings")
    if "smtp-sink" in commands:
        lines.append(f"  mail inbox:            {where.inbox}/")
    scraped = [
        f"http://127.0.0.1:{port}/metrics"
        for name, port in (
            ("gateway", where.gateway_port),
            ("relay", where.relay_metrics_port),
            ("migrator", where.migrator_metrics_port),
            ("notifier", where.notifier_metrics_port),
            ("webhooks", where.webhooks_metrics_port),
        )
        if name in commands
    ]
    if scraped:
        lines.append(f"  Prometheus metrics:    {'  '.join(scraped)}")
    lines.append(f"  PostgreSQL:            {env.get('DATABASE_URL', '')}")
    lines.append(f"  Kafka:                 {env.get('KAFKA_BOOTSTRAP_SERVERS', '')}")
    return lines
