"""`relink provider-sim`: run the Zoom / Google simulator in the foreground."""

from __future__ import annotations

import typer


def provider_sim_command(
    host: str | None = typer.Option(None, help="bind address (RELINK_PROVIDER_SIM_HOST)"),
    port: int | None = typer.Option(None, help="port (RELINK_PROVIDER_SIM_PORT, default 18090)"),
) -> None:
    """Run the local Zoom and Google Meet simulator (OAuth, meetings, fault injection)."""
    from devtools.provider_sim.server import serve
    from devtools.provider_sim.settings import ProviderSimSettings

    overrides = {
        key: value for key, value in {"host": host, "port": port}.items() if value is not None
    }
    serve(ProviderSimSettings(**overrides))  # type: ignore[arg-type]
