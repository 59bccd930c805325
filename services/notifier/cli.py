"""`relink notifier` and `relink audit show|replay`."""

from __future__ import annotations

import signal
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from services.notifier.settings import NotifierSettings

from services.core.cli import IDLE_SECONDS, UNTIL_IDLE
from services.core.logs import configure_logging
from services.core.tracing import configure_tracing

audit_app = typer.Typer(help="The audit trail: show a tutor's history, replay it from the topics.")


def notifier_command(
    until_idle: bool = UNTIL_IDLE,
    idle_seconds: float = IDLE_SECONDS,
) -> None:
    """Email students and tutors, write the audit trail (settings: services/notifier/README.md)."""
    from services.notifier.bootstrap import build_loop
    from services.notifier.settings import NotifierSettings

    settings = NotifierSettings()
    configure_logging(settings.log_level)
    configure_tracing("notifier")
    loop = build_loop(settings)
    server = _serve_metrics(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        loop.run(stop=stop, until_idle_s=idle_seconds if until_idle else None)
    finally:
        if server is not None:
            server.shutdown()
        loop.close()


def _serve_metrics(settings: NotifierSettings) -> ThreadingHTTPServer | None:
    """`/metrics` on RELINK_NOTIFIER_METRICS_PORT (when set), with the group's lag from Kafka."""
    from services.core import metrics
    from services.core.kafka import consumer_config
    from services.notifier.adapters.kafka import audit_topics

    metrics.process_started("notifier")
    if not settings.metrics_port:
        return None
    lag = metrics.ConsumerLag(
        consumer_config(settings, group_id=settings.group_id),
        group=settings.group_id,
        topics=audit_topics(settings),
    )
    return metrics.serve_metrics(
        lambda: metrics.render(lag),
        host=settings.metrics_host,
        port=settings.metrics_port,
        name="notifier",
    )


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@audit_app.command("show")
def audit_show(
    tutor: str = typer.Option(
        ..., "--tutor", help="the tutor's id or email (`relink tutors find` lists ids)"
    ),
    limit: int = typer.Option(1000, min=1, help="at most this many rows"),
) -> None:
    """Print a tutor's audit trail as a table, oldest first."""
    from rich.console import Console
    from rich.table import Table

    from services.core.db.engine import make_engine
    from services.core.db.people import resolve_tutor
    from services.notifier.bootstrap import build_audit
    from services.notifier.domain import provider_name
    from services.notifier.settings import NotifierSettings

    settings = NotifierSettings()
    engine = make_engine(settings.sync_database_url, pool_size=1)
    try:
        tutor_id = resolve_tutor(engine, tutor)
    except LookupError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tutor") from None
    finally:
        engine.dispose()
    audit = build_audit(settings)
    try:
        rows = audit.tutor_history(tutor_id=tutor_id, limit=limit)
    finally:
        audit.close()
    shown = tutor if tutor_id != _as_uuid(tutor) else str(tutor_id)
    title = f"Audit trail of tutor {shown}" + (f" ({tutor_id})" if shown != str(tutor_id) else "")
    table = Table(title=f"{title} ({len(rows)} events)")
    for column in ("when (UTC)", "event", "switch", "session", "from → to", "outcome"):
        table.add_column(column)
    for row in rows:
        moved = ""
        if row["from_provider"] or row["to_provider"]:
            moved = (
                f"{provider_name(row['from_provider']) if row['from_provider'] else '—'} → "
                f"{provider_name(row['to_provider']) if row['to_provider'] else '—'}"
            )
        table.add_row(
            row["event_time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            row["event_type"],
            str(row["switch_id"] or "")[:8],
            str(row["session_id"] or "")[:8],
            moved,
            row["outcome"] or "",
        )
    Console(width=160).print(table)


@audit_app.command("replay")
def audit_replay(
    since: str | None = typer.Option(None, help="only events appended at or after this ISO time"),
    verify: bool = typer.Option(
        False, "--verify", help="compare the topics with the table instead of writing"
    ),
    workers: int = typer.Option(0, min=0, help="parse processes (0: one per core)"),
) -> None:
    """Rebuild audit_log from the topics' history (idempotent), or --verify it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.notifier.bootstrap import build_audit

    audit = build_audit()
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("verifying" if verify else "replaying", total=None)

        def on_plan(total: int) -> None:
            progress.update(task, total=total)

        def on_progress(n: int) -> None:
            progress.advance(task, n)

        if verify:
            report = audit.verify(since=_since(since), on_plan=on_plan, on_progress=on_progress)
        else:
            result = audit.replay(
                since=_since(since),
                workers=workers or None,
                on_plan=on_plan,
                on_progress=on_progress,
            )
    audit.close()
    if not verify:
        typer.echo(
            f"replayed {result.read} messages: {result.inserted} audit rows inserted, "
            f"{result.read - result.inserted - result.skipped_invalid} already present, "
            f"{result.skipped_invalid} unparseable skipped"
        )
        return
    for event_id in report.missing:
        typer.echo(f"missing  {event_id}: on the topics, not in audit_log")
    for event_id in report.extra:
        typer.echo(f"extra    {event_id}: in audit_log, not on the topics")
    for event_id, column, on_topic, in_table in report.different:
        typer.echo(f"differs  {event_id}: {column}: topics {on_topic!r} ≠ table {in_table!r}")
    typer.echo(
        f"verified {report.distinct_events} events ({report.events_on_topics} messages)"
        f" against {report.rows_in_table} rows: "
        f"{len(report.missing)} missing, {len(report.extra)} extra, "
        f"{len(report.different)} different"
    )
    if not report.ok:
        raise typer.Exit(1)
