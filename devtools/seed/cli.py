"""`relink seed demo`: demo data for the devstack."""

from __future__ import annotations

import typer

seed_app = typer.Typer(help="Demo data for the devstack.", no_args_is_help=True)


@seed_app.command("demo")
def seed_demo_command() -> None:
    """Create the demo tutors, students and sessions (idempotent; dev mode only)."""
    from rich.console import Console

    from devtools.seed.demo import seed_demo
    from services.oauth_gateway.settings import GatewaySettings

    report = seed_demo(GatewaySettings())
    console = Console(highlight=False)
    console.print(
        f"demo users: {report.users_created} created, {report.users_total} in all; "
        f"sessions: {report.sessions_created} created, {report.sessions_refreshed} placed "
        f"again relative to now; meetings: {report.meetings_source}"
    )
