"""`relink bench devstack`: how fast the devstack starts and how much the broker takes."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from devtools.bench.results import record
from devtools.devstack.settings import DevstackSettings
from devtools.devstack.stack import Devstack

console = Console()

# Ports away from the default devstack's, so a running devstack is not disturbed.
BENCH_PG_PORT, BENCH_KAFKA_PORT, BENCH_CONTROLLER_PORT = 54395, 19292, 19293


def _stack(home: Path) -> Devstack:
    return Devstack(
        DevstackSettings(
            RELINK_DEVSTACK_HOME=home,
            RELINK_DEVSTACK_POSTGRES="embedded",
            RELINK_DEVSTACK_KAFKA="embedded",
            RELINK_DEVSTACK_PG_PORT=BENCH_PG_PORT,
            RELINK_DEVSTACK_KAFKA_PORT=BENCH_KAFKA_PORT,
            RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT=BENCH_CONTROLLER_PORT,
        )
    )


def run(*, runs: int = 1) -> dict[str, float]:
    """Time cold (empty data dirs, jars cached) and warm `up`, and the broker's RSS."""
    cold: list[float] = []
    warm: list[float] = []
    rss: list[float] = []
    for _ in range(runs):
        home = Path(tempfile.mkdtemp(prefix="relink-bench-devstack-"))
        stack = _stack(home)
        try:
            stack.kafka.jars.fetch()  # cached jars: "cold" means empty data dirs
            start = time.monotonic()
            stack.up()
            cold.append(time.monotonic() - start)
            time.sleep(2)  # let the broker settle before reading its memory
            rss.append(stack.kafka.rss_mb() or 0.0)
            stack.down()
            start = time.monotonic()
            stack.up()
            warm.append(time.monotonic() - start)
        finally:
            stack.wipe()  # also the data it may have kept under /var/tmp (run as root)
            shutil.rmtree(home, ignore_errors=True)
    figures = {
        "cold_start_s": round(min(cold), 2),
        "warm_start_s": round(min(warm), 2),
        "kafka_rss_mb": round(max(rss), 1),
    }
    record("devstack", figures)
    console.print(figures)
    return figures
