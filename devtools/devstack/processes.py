"""Small process-control pieces the devstack parts share: pid files, ports, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from devtools.devstack.errors import PortInUseError, StartTimeoutError


def port_is_open(port: int, *, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, *, what: str) -> None:
    """Refuse to start when another process already listens on our port."""
    if port_is_open(port):
        raise PortInUseError(
            f"{what}: port {port} on 127.0.0.1 is already taken by another process. "
            f"Stop it, or choose another port (see the README's RELINK_DEVSTACK_* variables)."
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie we own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # state is the field after the parenthesised command name
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    """The pid stored in a pid file, if the file exists and the process lives."""
    try:
        pid = int(path.read_text().strip().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid: int, *, timeout: float = 20.0) -> None:
    """SIGTERM a process group leader, then SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log_path: Path,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll `ready` until true; raise with the log's path on timeout or early death."""
    start = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - start
        if alive is not None and not alive():
            raise StartTimeoutError(
                f"{what} exited during start-up; read its log: {log_path}\n{tail(log_path)}"
            )
        if time.monotonic() - start > timeout:
            raise StartTimeoutError(
                f"{what} was not ready after {timeout:.0f}s; read its log: {log_path}\n"
                f"{tail(log_path)}"
            )
        time.sleep(0.1)


def tail(path: Path, *, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
