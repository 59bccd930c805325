"""`relink`: one console script, one subcommand per process or tool.

Each sub-app lives beside the code it drives and keeps its heavy imports
inside its commands, so `relink --help` stays fast.

The product's commands are registered here. The workshop's (`relink dev`,
`bench`, `soak`, `run`, `provider-sim`, `smtp-sink`, `seed`) come from
whatever distribution declares them in the `relink.commands` entry-point
group (`devtools/pyproject.toml`): the product never imports the workshop,
and without it those commands are simply absent.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from services.core.cli import db_app, init_command, kafka_app, tutors_app
from services.core.errors import ConfigurationError
from services.core.keys_cli import keys_app
from services.migrator.cli import migrator as migrator_command
from services.notifier.cli import audit_app, notifier_command
from services.oauth_gateway.cli import api_keys_app, gateway_command
from services.relay.cli import relay as relay_command
from services.webhooks.cli import webhooks_app

COMMANDS_GROUP = "relink.commands"
WORKSHOP_HINT = (
    "Dev, bench, soak and simulator commands come with the workshop: "
    "`pip install -e ./devtools` from a checkout (`make install` does it)."
)

app = typer.Typer(
    name="relink",
    help="Move tutors' future sessions to their new video provider.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")
keys_app.add_typer(api_keys_app, name="api")
app.add_typer(keys_app, name="keys")
app.command("gateway")(gateway_command)
app.command("init", help="Migrate the database and create the topics.")(init_command)
app.command("relay")(relay_command)
app.command("migrator")(migrator_command)
app.command("notifier")(notifier_command)
app.add_typer(audit_app, name="audit")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(tutors_app, name="tutors")


def add_plugin_commands(target: typer.Typer) -> list[str]:
    """Register every `relink.commands` entry point on `target`; their names, sorted."""
    names = []
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        command = entry.load()
        if isinstance(command, typer.Typer):
            target.add_typer(command, name=entry.name)
        else:
            target.command(entry.name)(command)
        names.append(entry.name)
    return names


if not add_plugin_commands(app):
    app.info.epilog = WORKSHOP_HINT


def main() -> None:
    """Entry point of the `relink` console script.

    A configuration error (a missing key, a setting that contradicts another)
    is the operator's to fix: one line saying what, exit status 2, no traceback.
    So is a database the command cannot reach, or one without relink's tables:
    one line naming the address it tried (never its password), exit status 1.
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from services.core.db.errors import StoreUnavailable

    try:
        app()
    except ConfigurationError as exc:
        typer.echo(f"relink: configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    except (OperationalError, StoreUnavailable) as exc:
        typer.echo(
            f"relink: cannot reach the database at {_database_address()}: {_first_line(exc)}",
            err=True,
        )
        raise SystemExit(1) from None
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != UNDEFINED_TABLE:
            raise
        typer.echo(
            f"relink: the database at {_database_address()} has no relink schema "
            f"({_first_line(exc)}); run `relink db upgrade` (or `relink init`)",
            err=True,
        )
        raise SystemExit(1) from None


UNDEFINED_TABLE = "42P01"


def _database_address() -> str:
    """Where this command's settings point (DATABASE_URL, or the devstack's port)."""
    from services.core.settings import CommonSettings

    try:
        return CommonSettings().database_address
    except Exception:  # the settings themselves are broken: still one line
        return "DATABASE_URL"


def _first_line(exc: Exception) -> str:
    """The driver's own reason, one line, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


if __name__ == "__main__":
    main()
