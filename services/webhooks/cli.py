"""`relink webhooks` (the dispatcher), `relink webhooks endpoints add|list|disable|enable`,
`relink webhooks replay`, `relink webhooks log`."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from services.core.cli import IDLE_SECONDS, UNTIL_IDLE
from services.core.logs import configure_logging
from services.core.tracing import configure_tracing

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from services.webhooks.settings import WebhooksSettings
    from services.webhooks.usecases.endpoints import Endpoints

webhooks_app = typer.Typer(
    help="Signed webhooks to the platform: the dispatcher (no subcommand), its endpoints, "
    "replays and delivery log (services/webhooks/README.md).",
    invoke_without_command=True,
)
endpoints_app = typer.Typer(help="The platform's webhook endpoints.", no_args_is_help=True)
webhooks_app.add_typer(endpoints_app, name="endpoints")


@webhooks_app.callback()
def webhooks_main(
    ctx: typer.Context,
    until_idle: bool = UNTIL_IDLE,
    idle_seconds: float = IDLE_SECONDS,
) -> None:
    """Without a subcommand: run the dispatcher (consume the topics, deliver webhooks)."""
    if ctx.invoked_subcommand is None:
        run(until_idle=until_idle, idle_seconds=idle_seconds)


@webhooks_app.command("run")
def run(until_idle: bool = UNTIL_IDLE, idle_seconds: float = IDLE_SECONDS) -> None:
    """Run the dispatcher (the same as `relink webhooks`)."""
    from services.core.db.token_keys import check_token_keys_at
    from services.webhooks.bootstrap import build_loop
    from services.webhooks.settings import WebhooksSettings

    settings = WebhooksSettings()
    configure_logging(settings.log_level)
    configure_tracing("webhooks")
    check_token_keys_at(
        settings.sync_database_url, settings.token_cipher().key_ids, process="relink webhooks"
    )
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


def _serve_metrics(settings: WebhooksSettings) -> ThreadingHTTPServer | None:
    """`/metrics` on RELINK_WEBHOOKS_METRICS_PORT (when set): the attempts' counters, the
    owed deliveries and endpoints from PostgreSQL, and the group's lag from Kafka."""
    from services.core import metrics
    from services.core.db.engine import make_engine
    from services.core.kafka import consumer_config
    from services.webhooks.adapters.kafka import event_topics
    from services.webhooks.adapters.metrics import OwedDeliveries

    metrics.process_started("webhooks")
    if not settings.metrics_port:
        return None
    owed = OwedDeliveries(make_engine(settings.sync_database_url, pool_size=1))
    lag = metrics.ConsumerLag(
        consumer_config(settings, group_id=settings.group_id),
        group=settings.group_id,
        topics=event_topics(settings),
    )
    return metrics.serve_metrics(
        lambda: metrics.render(owed, lag),
        host=settings.metrics_host,
        port=settings.metrics_port,
        name="webhooks",
    )


def _endpoints() -> Endpoints:
    from services.webhooks.bootstrap import build_endpoints

    return build_endpoints()


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@endpoints_app.command("add")
def endpoints_add(
    url: str = typer.Option(..., "--url", help="where to POST (https; http in dev mode only)"),
    event_type: list[str] = typer.Option(
        [], "--event-type", help="repeat to choose event types; none: every type"
    ),
    name: str = typer.Option("", "--name", help="a label, e.g. 'platform production'"),
    secret: str | None = typer.Option(
        None, "--secret", help="a whsec_… secret of your own (default: a fresh one)"
    ),
) -> None:
    """Register an endpoint; its secret is printed once (store it in your receiver)."""
    from services.webhooks.errors import WebhooksError

    try:
        registered = _endpoints().add(url=url, event_types=event_type, name=name, secret=secret)
    except WebhooksError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{registered.id} registered; its signing secret (shown once):", err=True)
    typer.echo(f"{registered.id} {registered.secret}")


@endpoints_app.command("list")
def endpoints_list() -> None:
    """Every endpoint: id, URL, event types, state, deliveries by state (never the secret)."""
    for row in _endpoints().all():
        state = (
            f"disabled {row['disabled_at']:%Y-%m-%d %H:%M} ({row['disabled_reason']})"
            if row["disabled_at"]
            else "enabled"
        )
        counts = " ".join(f"{k.lower()}={v}" for k, v in sorted(row["deliveries"].items()))
        typer.echo(
            f"{row['id']}  {row['name']!r}  {row['url']}  types: {row['event_types'] or 'all'}"
            f"  {state}  failure streak {row['failure_streak']}  {counts}".rstrip()
        )


@endpoints_app.command("disable")
def endpoints_disable(
    endpoint_id: str = typer.Argument(..., help="the endpoint's id (we_…)"),
) -> None:
    """Stop sending to an endpoint (its pending deliveries are kept as SKIPPED)."""
    from services.webhooks.errors import WebhooksError

    try:
        skipped = _endpoints().disable(endpoint_id)
    except WebhooksError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{endpoint_id} disabled ({skipped} pending deliveries skipped)")


@endpoints_app.command("enable")
def endpoints_enable(
    endpoint_id: str = typer.Argument(..., help="the endpoint's id (we_…)"),
) -> None:
    """Send to an endpoint again; `relink webhooks replay` sends what it missed."""
    from services.webhooks.errors import WebhooksError

    try:
        _endpoints().enable(endpoint_id)
    except WebhooksError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{endpoint_id} enabled")


@webhooks_app.command("replay")
def replay(
    since: str = typer.Option(..., "--since", help="events at or after this ISO time"),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="one endpoint (default: all enabled)"
    ),
) -> None:
    """Deliver again every event since a time (a running dispatcher sends them)."""
    from services.webhooks.errors import WebhooksError

    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fail(ValueError(f"--since {since!r} is not an ISO time")) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        queued = _endpoints().replay(since=moment, endpoint_id=endpoint)
    except WebhooksError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{queued} deliveries queued again")


@webhooks_app.command("log")
def delivery_log(
    endpoint: str | None = typer.Option(None, "--endpoint", help="one endpoint (default: all)"),
    limit: int = typer.Option(50, min=1, help="at most this many attempts, newest first"),
) -> None:
    """The delivery log: each attempt's time, endpoint, message, event, answer and the state."""
    for row in _endpoints().delivery_log(endpoint_id=endpoint, limit=limit):
        answer = f"HTTP {row['status_code']}" if row["status_code"] is not None else row["error"]
        typer.echo(
            f"{row['attempted_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S}  {row['endpoint_id']}"
            f"  {row['message_id']}  {row['event_type']}  {answer}  {row['duration_ms']} ms"
            f"  -> {row['state']} (attempts {row['attempts']})"
        )
