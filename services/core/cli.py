"""`relink db ...` and `relink kafka ...`: schema and topics."""

from __future__ import annotations

import typer
from rich.console import Console

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
kafka_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
console = Console()


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Migrate the database at DATABASE_URL up to a revision (default: head)."""
    from services.core.db import migrate
    from services.core.settings import CommonSettings

    url = CommonSettings().sync_database_url
    migrate.upgrade(url, revision=revision)
    console.print(f"database at revision [bold]{migrate.current(url)}[/bold]")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument("base", help="target revision")) -> None:
    """Migrate the database at DATABASE_URL down to a revision (default: base, empty)."""
    from services.core.db import migrate
    from services.core.settings import CommonSettings

    url = CommonSettings().sync_database_url
    migrate.downgrade(url, revision=revision)
    console.print(f"database at revision [bold]{migrate.current(url) or 'base'}[/bold]")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at, and the newest one."""
    from services.core.db import migrate
    from services.core.settings import CommonSettings

    url = CommonSettings().sync_database_url
    console.print(f"current: {migrate.current(url) or 'base'}  head: {migrate.head()}")


@kafka_app.command("topics")
def kafka_topics(
    partitions: int | None = typer.Option(
        None, min=1, help="partitions per topic (default: RELINK_TOPIC_PARTITIONS)"
    ),
) -> None:
    """Create relink's topics (infinite retention) and the dead-letter topic."""
    from services.core.kafka import create_topics
    from services.core.settings import CommonSettings

    settings = CommonSettings()
    created = create_topics(settings, partitions=partitions)
    for name in settings.topics:
        state = "created" if name in created else "exists"
        console.print(f"{name:40} {state}")


def init_command() -> None:
    """Prepare a fresh environment: migrate the database to head and create the topics."""
    db_upgrade("head")
    kafka_topics(None)


# One meaning of `--until-idle` for every loop that has it (relay, notifier):
# exit once nothing is owed and nothing has happened for `--idle-seconds`.
UNTIL_IDLE = typer.Option(
    False,
    "--until-idle",
    help="exit once nothing is owed and nothing happened for --idle-seconds (scripts, benches)",
)
IDLE_SECONDS = typer.Option(
    1.0, "--idle-seconds", min=0.0, help="with --until-idle: how long idle counts as done"
)
