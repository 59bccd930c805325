"""Each process's /metrics endpoint: a port already taken is a clear configuration
error naming the setting, not a traceback (issue 20)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROCESSES = ("relay", "migrator", "notifier", "webhooks")


@pytest.mark.parametrize("process", PROCESSES)
def test_a_metrics_port_already_taken_is_a_clear_error(
    process: str, relink_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **relink_env,
            f"RELINK_{process.upper()}_METRICS_PORT": str(port),
            "RELINK_MIGRATOR_DATADIR": str(tmp_path / "migrator"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", process],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"relink {process} cannot serve /metrics on 127.0.0.1:{port}" in done.stderr
    assert f"RELINK_{process.upper()}_METRICS_PORT" in done.stderr
    assert "Traceback" not in done.stderr
