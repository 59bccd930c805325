"""A real Prometheus (Debian's `prometheus` package, installed by `make`) for the tests.

Its own config, data folder and free port under the test's tmp_path; PromQL
through its HTTP API (/api/v1/query).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from devtools.soak.stack import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"`{name}` is needed for this test: `make install` installs Debian's `prometheus` "
            f"package (apt-get install prometheus), which has both prometheus and promtool"
        )
    return found


class Prometheus:
    """One Prometheus server scraping `targets` ({job: "host:port"}) every second."""

    def __init__(self, folder: Path, targets: dict[str, str], *, rules: list[Path]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs = "".join(
            f"  - job_name: relink-{job}\n"
            f"    static_configs:\n"
            f"      - targets: ['{target}']\n"
            f"        labels: {{process: {job}}}\n"
            for job, target in targets.items()
        )
        rule_files = "".join(f"  - {path}\n" for path in rules)
        (folder / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n{rule_files}scrape_configs:\n{jobs}"
        )
        self.log = folder / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {timeout_s}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def get(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` gives now: [{"metric": {...}, "value": [t, "v"]}]."""
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of `promql`, or None when it has no series."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None
