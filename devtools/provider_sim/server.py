"""Running the simulator: in the foreground (the CLI) or on a background thread (tests)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from devtools.provider_sim.app import create_app
from devtools.provider_sim.settings import ProviderSimSettings


def uvicorn_config(settings: ProviderSimSettings, *, port: int | None = None) -> uvicorn.Config:
    """The uvicorn configuration: one worker, since the state lives in this process."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port if port is None else port,
        log_level=settings.log_level,
        access_log=False,
        # Keep-alive long enough that pooled client connections are reused.
        timeout_keep_alive=30,
        lifespan="off",
    )


class SimServer(uvicorn.Server):
    """uvicorn's server, saving the simulator's state file as the last step of its shutdown.

    Inside the shutdown, not after `run()` returns: uvicorn re-raises the
    SIGTERM it caught once it has shut down, which ends the process before
    any code after `run()` could save.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        close_state(self)


def serve(settings: ProviderSimSettings | None = None) -> None:
    """Run the simulator until interrupted (then save its state, when it keeps one)."""
    SimServer(uvicorn_config(settings or ProviderSimSettings())).run()


def close_state(server: uvicorn.Server) -> None:
    """The final save of a stopped simulator's state file, if it has one."""
    app_state = getattr(server.config.app, "state", None)
    state_file = getattr(app_state, "state_file", None)
    if state_file is not None:
        state_file.close()


@dataclass
class SimHandle:
    """A simulator running on a thread: its base URL and how to stop it."""

    base_url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def zoom_base(self) -> str:
        return f"{self.base_url}/zoom"

    @property
    def google_base(self) -> str:
        return f"{self.base_url}/google"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if not self.thread.is_alive():
            close_state(self.server)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_in_thread(
    port: int = 0, *, settings: ProviderSimSettings | None = None, start_timeout_s: float = 10.0
) -> SimHandle:
    """Start the simulator on a background thread (port 0: a free one) and wait until it serves."""
    settings = settings or ProviderSimSettings()
    port = port or free_port(settings.host)
    server = SimServer(uvicorn_config(settings, port=port))
    # uvicorn installs signal handlers only on the main thread; this one stops via should_exit.
    thread = threading.Thread(target=server.run, name=f"provider-sim:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"provider simulator did not start on {settings.host}:{port}")
        time.sleep(0.02)
    return SimHandle(base_url=f"http://{settings.host}:{port}", server=server, thread=thread)
