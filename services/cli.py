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

from services.core.cli import db_app, init_command, kafka_app
from services.core.errors import ConfigurationError
from services.core.keys_cli import keys_app
from services.migrator.cli import migrator as migrator_command
from services.notifier.cli import audit_app, notifier_command
from services.oauth_gateway.cli import api_keys_app, gateway_command
from services.relay.cli import relay as relay_command

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
    """
    try:
        app()
    except ConfigurationError as exc:
        typer.echo(f"relink: configuration error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
