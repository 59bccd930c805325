"""`relink`: one console script, one subcommand per process or tool.

Each sub-app lives beside the code it drives and keeps its heavy imports
inside its commands, so `relink --help` stays fast.
"""

from __future__ import annotations

import typer

from services.bench.cli import app as bench_app
from services.core.cli import db_app, init_command, kafka_app
from services.core.keys_cli import keys_app
from services.devstack.cli import app as dev_app
from services.migrator.cli import migrator as migrator_command
from services.notifier.cli import audit_app, notifier_command
from services.oauth_gateway.cli import gateway_command, seed_app
from services.provider_sim.cli import provider_sim_command
from services.relay.cli import relay as relay_command
from services.smtp_sink.cli import smtp_sink_command
from services.soak.cli import soak_command

app = typer.Typer(
    name="relink",
    help="Move tutors' future sessions to their new video provider.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev_app, name="dev")
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(seed_app, name="seed")
app.command("gateway")(gateway_command)
app.command("init", help="Migrate the database and create the topics.")(init_command)
app.command("relay")(relay_command)
app.command("migrator")(migrator_command)
app.command("provider-sim")(provider_sim_command)
app.command("soak")(soak_command)
app.command("notifier")(notifier_command)
app.command("smtp-sink")(smtp_sink_command)
app.add_typer(audit_app, name="audit")


@app.command("run")
def run(seed: bool = True) -> None:
    """Run the devstack and every relink process, logs prefixed; Ctrl-C stops all."""
    from services.devstack.supervisor import run_stack

    run_stack(seed=seed)


def main() -> None:
    """Entry point of the `relink` console script."""
    app()


if __name__ == "__main__":
    main()
