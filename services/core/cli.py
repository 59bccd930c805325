"""`relink db ...`, `relink kafka ...` and `relink tutors find`: schema, topics, people."""

from __future__ import annotations

import typer
from rich.console import Console

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
kafka_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
tutors_app = typer.Typer(help="Tutors: from a person to their id.", no_args_is_help=True)
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


@tutors_app.command("find")
def tutors_find(
    who: str = typer.Argument(..., help="an email (exact, any case) or part of a name or email"),
) -> None:
    """List the tutors matching an email or a name, with their ids and connected provider."""
    from services.core.db.engine import make_engine
    from services.core.db.people import find_tutors
    from services.core.settings import CommonSettings

    engine = make_engine(CommonSettings().sync_database_url, pool_size=1)
    try:
        found = find_tutors(engine, who)
    finally:
        engine.dispose()
    if not found:
        typer.echo(f"no tutor matches {who!r}", err=True)
        raise typer.Exit(1)
    for tutor in found:
        provider = tutor.provider or "not connected"
        typer.echo(f"{tutor.id}  {tutor.name} <{tutor.email}>  {provider}")
