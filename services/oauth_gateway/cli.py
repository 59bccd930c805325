"""`relink gateway`, and `relink keys api` (the service API's keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.oauth_gateway.adapters.db.platform import PlatformStore


def gateway_command() -> None:
    """Serve the OAuth gateway with uvicorn (settings: RELINK_GATEWAY_*, see its README)."""
    import uvicorn

    from services.core.db.token_keys import check_token_keys_at
    from services.core.logs import configure_logging
    from services.oauth_gateway.settings import GatewaySettings
    from services.providers import ProviderSettings

    settings = GatewaySettings()
    configure_logging(settings.log_level)
    # Settings first (a wrong endpoint or secret exits naming it), then the database.
    ProviderSettings()
    check_token_keys_at(
        settings.sync_database_url, settings.token_cipher().key_ids, process="relink gateway"
    )
    if settings.workers > 1:
        _multiprocess_metrics(settings.metrics_dir)
    uvicorn.run(
        "services.oauth_gateway.entrypoint:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


def _multiprocess_metrics(folder: Path | None) -> None:
    """Let every uvicorn worker write its figures where `/metrics` (any worker) merges them.

    prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR must be set before
    a worker imports it, and emptied at start (files of dead workers would add up).
    """
    import shutil
    import tempfile

    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or (str(folder) if folder else None)
    if chosen is None:
        chosen = tempfile.mkdtemp(prefix="relink-gateway-metrics-")
    shutil.rmtree(chosen, ignore_errors=True)
    Path(chosen).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = chosen


api_keys_app = typer.Typer(
    help="API keys of the platform's backend for the service API (/platform/v1).",
    no_args_is_help=True,
)


def _platform_store() -> PlatformStore:
    from services.core.db.engine import make_engine, make_session_factory
    from services.oauth_gateway.adapters.db.platform import PlatformStore
    from services.oauth_gateway.settings import GatewaySettings

    settings = GatewaySettings()
    engine = make_engine(settings.sync_database_url, pool_size=1)
    return PlatformStore(make_session_factory(engine), topics=settings)


@api_keys_app.command("create")
def create_api_key(
    name: str = typer.Option(..., "--name", help="who uses the key, e.g. 'platform backend'"),
    scope: list[str] = typer.Option(
        ..., "--scope", help="repeat: users:read users:write sessions:read sessions:write"
    ),
) -> None:
    """Make a key; it is printed once (only its hash is stored)."""
    try:
        issued = _platform_store().create_key(name, tuple(scope))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{issued.id}  {issued.name}  scopes: {' '.join(issued.scopes)}", err=True)
    typer.echo("the key (shown once; send it as `Authorization: Bearer <key>`):", err=True)
    typer.echo(issued.secret)


@api_keys_app.command("list")
def list_api_keys() -> None:
    """Every key: id, name, scopes, created, last used, revoked (never the secret)."""
    for key in _platform_store().api_keys():
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        typer.echo(
            f"{key.id}  {key.name!r}  {' '.join(key.scopes)}  created {key.created_at:%Y-%m-%d}"
            f"  last used {used}  {state}"
        )


@api_keys_app.command("revoke")
def revoke_api_key(key_id: str = typer.Argument(..., help="the key's id (rk_…)")) -> None:
    """End a key at once (its requests get 401 from now on)."""
    from datetime import UTC, datetime

    if not _platform_store().revoke_key(key_id, now=datetime.now(UTC)):
        typer.echo(f"error: no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{key_id} revoked")
