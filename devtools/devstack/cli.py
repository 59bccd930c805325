"""`relink dev up|down|status|wipe` and `relink run`: the local devstack."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from devtools.devstack.cluster import SERVICE_USERS
from devtools.devstack.errors import DevstackError

if TYPE_CHECKING:
    from devtools.devstack.stack import Devstack

app = typer.Typer(help="The local devstack: real PostgreSQL and Kafka.", no_args_is_help=True)
console = Console()


def _stack(brokers: int | None = None) -> Devstack:
    from devtools.devstack.settings import DevstackSettings
    from devtools.devstack.stack import Devstack

    settings = DevstackSettings()
    if brokers is not None:
        settings.kafka_brokers = brokers
    return Devstack(settings)


BROKERS = typer.Option(
    None,
    "--brokers",
    min=1,
    max=5,
    help="Kafka nodes: 1 is the plaintext single broker; 3 a secured KRaft cluster "
    "(SASL/SCRAM, ACLs, replication 3, min.insync 2). Default RELINK_DEVSTACK_KAFKA_BROKERS or 1.",
)


@app.command("up")
def up(
    migrate: bool = typer.Option(True, help="run the database migrations to head"),
    topics: bool = typer.Option(True, help="create relink's topics"),
    brokers: int | None = BROKERS,
) -> None:
    """Start PostgreSQL and Kafka (fetching Kafka's jars once), migrate, create topics."""
    stack = _stack(brokers)
    try:
        report = stack.up()
    except DevstackError as exc:
        console.print(f"[red]devstack failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if migrate:
        from services.core.db import migrate as migrations

        migrations.upgrade(stack.database_url)
    if topics:
        from services.migrator.settings import MigratorSettings
        from services.notifier.settings import NotifierSettings

        prefix = MigratorSettings().topic_prefix
        stack.create_topics(
            prefix,
            migrator_group=MigratorSettings().faust_app_id,
            notifier_group=NotifierSettings().group_id,
        )
    started = ", ".join(report.started) or "nothing (already running)"
    console.print(f"started {started} in {report.total_s:.1f}s")
    _print_status(stack)
    console.print("\nexport these to point relink at it:")
    for key, value in stack.env().items():
        if key == "KAFKA_SASL_PASSWORD" and stack.cluster is not None:
            # not printed: read from the file only its owner can read
            path = stack.cluster.security.path
            value = f'$(python3 -c \'import json;print(json.load(open("{path}"))["admin"])\')'
        console.print(f"  export {key}={value}")
    cluster = stack.cluster
    if cluster is not None:
        console.print(
            "\nthat is the operator's user (admin); each process has its own, with only "
            f"its ACLs: {', '.join(SERVICE_USERS)} (passwords in {cluster.security.path})"
        )


@app.command("down")
def down(brokers: int | None = BROKERS) -> None:
    """Stop what `up` started."""
    stack = _stack(brokers)
    stack.down()
    if brokers is None and stack.embedded_kafka:
        # whichever Kafka runs, the single broker or a cluster's nodes
        from devtools.devstack.processes import read_pid, stop_pid

        for pid_file in [
            stack.home / "kafka" / "kafka.pid",
            *stack.home.glob("kafka-cluster/node-*/kafka.pid"),
        ]:
            pid = read_pid(pid_file)
            if pid is not None:
                stop_pid(pid, timeout=30)
    console.print("devstack stopped")


@app.command("status")
def status(brokers: int | None = BROKERS) -> None:
    """Show whether each part runs, where, and its log."""
    stack = _stack(brokers)
    if not _print_status(stack):
        raise typer.Exit(3)


@app.command("wipe")
def wipe(
    yes: bool = typer.Option(False, "--yes", help="do not ask"), brokers: int | None = BROKERS
) -> None:
    """Stop everything and delete the devstack's data."""
    stack = _stack(brokers)
    if not yes:
        typer.confirm(f"delete all data under {stack.home}?", abort=True)
    stack.wipe()
    console.print("devstack wiped")


def _print_status(stack: Devstack) -> bool:
    """One line per part, then its details, each path whole (never cut to the terminal)."""
    all_up = True
    for part in stack.status():
        all_up &= part.running
        state = "[green]running[/green]" if part.running else "[red]stopped[/red]"
        console.print(f"{part.name:<9} {state}  {part.address}", soft_wrap=True)
        for detail in part.detail.split(", "):
            if detail:
                console.print(f"          {detail}", soft_wrap=True, highlight=False)
    return all_up


def run_command(seed: bool = True) -> None:
    """Run the devstack and every relink process, logs prefixed; Ctrl-C stops all."""
    from devtools.devstack.supervisor import run_stack

    run_stack(seed=seed)
