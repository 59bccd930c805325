"""`relink smtp-sink`: run the local SMTP sink until SIGTERM / Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from devtools.smtp_sink.sink import DEFAULT_HTTP_PORT, DEFAULT_SMTP_PORT


def smtp_sink_command(
    host: str = typer.Option("127.0.0.1", envvar="RELINK_SMTP_SINK_HOST"),
    port: int = typer.Option(DEFAULT_SMTP_PORT, envvar="RELINK_SMTP_SINK_PORT"),
    http_port: int = typer.Option(DEFAULT_HTTP_PORT, envvar="RELINK_SMTP_SINK_HTTP_PORT"),
    folder: Path = typer.Option(
        Path(".devstack/mail"), envvar="RELINK_SMTP_SINK_FOLDER", help="where .eml files go"
    ),
) -> None:
    """Accept mail on loopback, keep it as .eml files, show it at the HTTP inbox."""
    from devtools.smtp_sink.sink import SmtpSink

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with SmtpSink(host=host, port=port, folder=folder, http_port=http_port) as sink:
        typer.echo(
            f"smtp-sink: SMTP {host}:{sink.port}, inbox http://{host}:{http_port}/, {folder}/"
        )
        stop.wait()
