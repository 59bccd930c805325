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
    workers: int = typer.Option(8, min=1, help="tutors acting at once"),
    seed: int = typer.Option(1, help="random seed (a run is repeatable in its choices)"),
    workdir: Path | None = typer.Option(None, help="where logs go (default: a temp folder)"),
    record_figures: bool = typer.Option(
        True, "--record/--no-record", help="write the e2e.soak_* figures to benchmarks/results.json"
    ),
) -> None:
    """Many tutors switching under faults, then every invariant of DESIGN.md checked."""
    from devtools.devstack.stack import Devstack
    from devtools.soak.run import SoakConfig, new_database, run_soak
    from services.core.kafka import create_topics
    from services.core.settings import CommonSettings

    stack = Devstack()
    report_up = stack.up()
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    database_url = new_database(stack.database_url)
    create_topics(
        CommonSettings(KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap, RELINK_TOPIC_PREFIX=prefix)
    )
    config = SoakConfig(
        tutors=tutors,
        switches=switches,
        kills=kills,
        broker_restarts=broker_restarts,
        database_restarts=database_restarts,
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

        record(
            "e2e",
            {
                "soak_switches": tally.actions["switch"],
                "soak_kills": sum(v for k, v in tally.faults.items() if k.startswith("SIGKILL")),
                "soak_restarts": tally.faults["broker restart"] + tally.faults["database restart"],
                "soak_violations": len(report.violations),
                "soak_duration_s": round(time.monotonic() - started, 1),
                "soak_checks": sum(report.checked.values()),
                # Resends after a notifier SIGKILL between the SMTP server's 250
                # and the COMMIT: same Message-ID, folded by the mailbox.
                "soak_duplicate_deliveries": sum(report.noted.values()),
            },
        )
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
