"""`relink run` on other ports: it waits on, seeds through and points at its own processes.

Every address comes from the settings in force (RELINK_GATEWAY_PORT,
RELINK_PROVIDER_SIM_PORT, RELINK_SMTP_SINK_PORT, RELINK_SMTP_SINK_HTTP_PORT, the
devstack's ports), never the defaults 18000/18090/18025, which may be someone else's.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TestInfrastructure as Infrastructure

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_relink_run_uses_the_ports_it_is_given(devstack: Infrastructure, tmp_path: Path) -> None:
    ports = {
        "RELINK_GATEWAY_PORT": _free_port(),
        "RELINK_PROVIDER_SIM_PORT": _free_port(),
        "RELINK_SMTP_SINK_PORT": _free_port(),
        "RELINK_SMTP_SINK_HTTP_PORT": _free_port(),
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("RELINK_")
    }
    env |= {k: v for k, v in os.environ.items() if k.startswith("RELINK_DEVSTACK_")}
    env |= {k: str(v) for k, v in ports.items()}
    env |= {
        "RELINK_PROVIDER_SIM_STATE_FILE": str(tmp_path / "sim.pickle"),
        "RELINK_SMTP_SINK_FOLDER": str(tmp_path / "mail"),
        "RELINK_MIGRATOR_APP_ID": f"relink-migrator-run-{os.getpid()}",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any("Ctrl-C stops everything" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen[-40:])
            assert proc.poll() is None, "".join(seen[-40:])
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        output = "".join(seen)
        gateway = f"http://127.0.0.1:{ports['RELINK_GATEWAY_PORT']}"
        sim = f"http://127.0.0.1:{ports['RELINK_PROVIDER_SIM_PORT']}"
        inbox = f"http://127.0.0.1:{ports['RELINK_SMTP_SINK_HTTP_PORT']}"
        assert f"{gateway}/tutor/video-setup" in output
        assert f"{sim}/_admin/meetings" in output
        assert f"{inbox}/" in output
        for default in (":18000", ":18090", ":18025"):
            assert default not in output
        # the seed waited for this simulator and made real meetings there
        assert "meetings: real, at the provider simulator" in output, output
        assert httpx.get(f"{sim}/_admin/health").is_success
        assert httpx.get(f"{gateway}/dev/sign-in").is_success
        assert httpx.get(f"{inbox}/").is_success
        # each process's /metrics, next to the gateway's port (issue 20), said at start
        base = ports["RELINK_GATEWAY_PORT"]
        metrics = {
            "gateway": f"{gateway}/metrics",
            "relay": f"http://127.0.0.1:{base + 1}/metrics",
            "migrator": f"http://127.0.0.1:{base + 2}/metrics",
            "notifier": f"http://127.0.0.1:{base + 3}/metrics",
            "webhooks": f"http://127.0.0.1:{base + 4}/metrics",
        }
        for process, url in metrics.items():
            assert url in output, output

            def answers(url: str = url, process: str = process) -> bool:
                try:
                    text = httpx.get(url, timeout=5).text
                except httpx.HTTPError:
                    return False
                return f'relink_build_info{{process="{process}"' in text

            deadline = time.monotonic() + 120
            while not answers():
                assert time.monotonic() < deadline, f"{process}: no /metrics at {url}"
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
