"""`relink dev up|down|status|wipe` and `relink run`: the local devstack."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from devtools.devstack.errors import DevstackError

if TYPE_CHECKING:
    from devtools.devstack.stack import Devstack

app = typer.Typer(help="The local devstack: real PostgreSQL and Kafka.", no_args_is_help=True)
console = Console()


def _stack() -> Devstack:
    from devtools.devstack.stack import Devstack

    return Devstack()


@app.command("up")
def up(
    migrate: bool = typer.Option(True, help="run the database migrations to head"),
    topics: bool = typer.Option(True, help="create relink's topics"),
) -> None:
    """Start PostgreSQL and Kafka (fetching Kafka's jars once), migrate, create topics."""
    stack = _stack()
    try:
        report = stack.up()
    except DevstackError as exc:
        console.print(f"[red]devstack failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if migrate:
        from services.core.db import migrate as migrations

        migrations.upgrade(stack.database_url)
    if topics:
        from services.core.kafka import create_topics
        from services.core.settings import CommonSettings

        create_topics(
            CommonSettings(
                DATABASE_URL=stack.database_url, KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap
            )
        )
    started = ", ".join(report.started) or "nothing (already running)"
    console.print(f"started {started} in {report.total_s:.1f}s")
    _print_status(stack)
    console.print("\nexport these to point relink at it:")
    for key, value in stack.env().items():
        console.print(f"  export {key}={value}")


@app.command("down")
def down() -> None:
    """Stop what `up` started."""
    stack = _stack()
    stack.down()
    console.print("devstack stopped")


@app.command("status")
def status() -> None:
    """Show whether each part runs, where, and its log."""
    stack = _stack()
    if not _print_status(stack):
        raise typer.Exit(3)


@app.command("wipe")
def wipe(yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Stop everything and delete the devstack's data."""
    stack = _stack()
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
