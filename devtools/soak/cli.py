"""`relink soak`: the fault and soak run, with its counts and the invariant report."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def soak_command(
    tutors: int = typer.Option(40, min=1, help="tutors switching at random"),
    switches: int = typer.Option(1000, min=1, help="switches to make in all"),
    kills: int = typer.Option(100, min=0, help="SIGKILLs of relay / migrator / notifier"),
    broker_restarts: int = typer.Option(3, min=0, help="Kafka broker stop/start cycles"),
    database_restarts: int = typer.Option(2, min=0, help="PostgreSQL restarts"),
    brokers: int | None = typer.Option(
        None,
        "--brokers",
        min=1,
        max=5,
        help="Kafka nodes: 3 runs the mix on the devstack's secured cluster "
        "(each process its own SASL user and ACLs), broker kills added",
    ),
    broker_kills: int | None = typer.Option(
        None,
        min=0,
        help="on a cluster: SIGKILL the leader of provider.switched, then a second "
        "broker, then start both (default 3 on a cluster, else 0)",
    ),
    workers: int = typer.Option(8, min=1, help="tutors acting at once"),
    seed: int = typer.Option(1, help="random seed (a run is repeatable in its choices)"),
    workdir: Path | None = typer.Option(None, help="where logs go (default: a temp folder)"),
    record_figures: bool = typer.Option(
        True, "--record/--no-record", help="write the e2e.soak_* figures to benchmarks/results.json"
    ),
) -> None:
    """Many tutors switching under faults, then every invariant of DESIGN.md checked."""
    from devtools.devstack.settings import DevstackSettings
    from devtools.devstack.stack import Devstack
    from devtools.soak.run import SoakConfig, new_database, run_soak

    devstack_settings = DevstackSettings()
    if brokers is not None:
        devstack_settings.kafka_brokers = brokers
    stack = Devstack(devstack_settings)
    report_up = stack.up()
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    database_url = new_database(stack.database_url)
    # the topics (and on a cluster each process's ACLs) for the run's prefix
    stack.create_topics(prefix, notifier_group=f"{prefix}relink-notifier")
    if broker_kills is None:
        broker_kills = 3 if stack.cluster is not None else 0
    config = SoakConfig(
        tutors=tutors,
        switches=switches,
        kills=kills,
        broker_restarts=broker_restarts,
        database_restarts=database_restarts,
        broker_kills=broker_kills,
        workers=workers,
        seed=seed,
    )
    folder = workdir or Path(tempfile.mkdtemp(prefix="relink-soak-"))
    started = time.monotonic()
    try:
        tally, report = run_soak(
            config,
            database_url=database_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            topic_prefix=prefix,
            workdir=folder,
            devstack=stack if stack.embedded_kafka and stack.embedded_postgres else None,
            console=console,
        )
    finally:
        stack.down(parts=tuple(report_up.started))
    print_report(tally, report)
    if record_figures:
        from devtools.bench.results import record

        figures = {
            "soak_switches": tally.actions["switch"],
            "soak_kills": sum(v for k, v in tally.faults.items() if k.startswith("SIGKILL")),
            "soak_restarts": tally.faults["broker restart"] + tally.faults["database restart"],
            "soak_violations": len(report.violations),
            "soak_duration_s": round(time.monotonic() - started, 1),
            "soak_checks": sum(report.checked.values()),
            # Resends after a notifier SIGKILL between the SMTP server's 250
            # and the COMMIT: same Message-ID, folded by the mailbox.
            "soak_duplicate_deliveries": sum(report.noted.values()),
        }
        if stack.cluster is not None:
            figures["soak_broker_kills"] = tally.faults["broker SIGKILL: a second broker"]
            # the cluster's run has figures of its own (soak_cluster_*)
            figures = {k.replace("soak_", "soak_cluster_", 1): v for k, v in figures.items()}
        record("e2e", figures)
    if not report.ok:
        raise typer.Exit(1)


def print_report(tally, report) -> None:  # type: ignore[no-untyped-def]
    table = Table("what", "count", title="actions and faults")
    for name, count in sorted(tally.actions.items()):
        table.add_row(f"action: {name}", str(count))
    for name, count in sorted(tally.faults.items()):
        table.add_row(f"fault: {name}", str(count))
    for name, count in sorted(tally.errors.items()):
        table.add_row(f"refused/failed action: {name}", str(count))
    console.print(table)
    checked = Table("invariant", "checked", title="invariants")
    for name, count in sorted(report.checked.items()):
        checked.add_row(name, str(count))
    console.print(checked)
    for name, count in sorted(report.noted.items()):
        console.print(f"noted (not a violation): {name}: {count}")
    if report.ok:
        console.print("[green]every invariant holds[/green]")
    else:
        failed = Table("invariant", "violations", title="violations per invariant")
        for name, count in sorted(Counter(v.invariant for v in report.violations).items()):
            failed.add_row(name, str(count))
        console.print(failed)
    for violation in report.violations[:50]:
        console.print(f"[red]VIOLATION[/red] {violation.invariant}: {violation.detail}")
    if len(report.violations) > 50:
        console.print(f"… and {len(report.violations) - 50} more")
