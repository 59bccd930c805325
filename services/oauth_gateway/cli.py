"""`relink gateway` and `relink seed demo`."""

from __future__ import annotations

import typer

seed_app = typer.Typer(help="Demo data for the devstack.", no_args_is_help=True)


def gateway_command() -> None:
    """Serve the OAuth gateway with uvicorn (settings: RELINK_GATEWAY_*, see its README)."""
    import logging

    import uvicorn

    from services.oauth_gateway.settings import GatewaySettings

    settings = GatewaySettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "services.oauth_gateway.bootstrap:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


@seed_app.command("demo")
def seed_demo_command() -> None:
    """Create the demo tutors, students and sessions (idempotent; dev mode only)."""
    from rich.console import Console

    from services.oauth_gateway.seed import seed_demo
    from services.oauth_gateway.settings import GatewaySettings

    report = seed_demo(GatewaySettings())
    console = Console(highlight=False)
    console.print(
        f"demo users: {report.users_created} created, {report.users_total} in all; "
        f"sessions: {report.sessions_created} created; meetings: {report.meetings_source}"
    )
