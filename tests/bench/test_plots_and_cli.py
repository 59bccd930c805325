"""`relink bench plots` draws valid PNGs from a results file; `relink bench all` is wired up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from devtools.bench.plots import PLOTS, draw

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _results() -> dict[str, Any]:
    sweep_row = {"sessions": 200, "concurrency": 100, "latency_ms": 100}
    return {
        "gateway": {
            "callback_p50_ms": {"0": 40.0, "1000": 41.0, "10000": 43.0},
            "callback_p99_ms": {"0": 90.0, "1000": 95.0, "10000": 99.0},
        },
        "baseline": {
            "inline_callback_p50_ms": {"0": 30.0, "1000": 4000.0, "10000": 45000.0},
            "inline_callback_p99_ms": {"0": 60.0, "1000": 5000.0, "10000": 47000.0},
        },
        "migrator": {
            "sweep": {
                "latency_ms": 100,
                "concurrency": 100,
                "by_concurrency": [
                    sweep_row | {"x": c, "sessions_per_s": c * 5.0, "bound_sessions_per_s": c * 10}
                    for c in (1, 10, 100)
                ],
                "by_latency_ms": [
                    sweep_row
                    | {
                        "x": lat,
                        "sessions_per_s": 900.0 / (1 + lat / 100),
                        "bound_sessions_per_s": None,
                    }
                    for lat in (0, 100, 300)
                ],
            }
        },
        "relay": {
            "throughput_eps": 30000,
            "naive_throughput_eps": 1400,
            "rows": 100000,
            "latency_p50_ms": 0.2,
            "latency_p99_ms": 8.0,
            "latency_max_ms": 30.0,
            "latency_rate_eps": 500,
        },
        "notifier": {"replay_eps": 22000, "replay_events": 1000000},
    }


def _relink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plots_command_writes_a_valid_png_per_plot(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    done = _relink("bench", "plots", "--results", str(results))
    assert done.returncode == 0, done.stderr
    written = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in written] == sorted(PLOTS)
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] >= 500 and image.size[1] >= 300


def test_plots_skip_parts_missing_from_the_record(tmp_path: Path) -> None:
    partial = {"gateway": _results()["gateway"]}
    report = draw(partial, tmp_path)
    assert [p.name for p in report.written] == ["callback_latency.png"]
    assert set(report.skipped) == set(PLOTS) - {"callback_latency.png"}


def test_bench_all_help_and_every_part_still_listed() -> None:
    done = _relink("bench", "all", "--help")
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--skip" in done.stdout
    listing = _relink("bench", "--help")
    assert listing.returncode == 0, listing.stderr
    for part in (
        "all",
        "plots",
        "devstack",
        "providers",
        "relay",
        "gateway",
        "migrator",
        "migrator-sweep",
        "notifier",
        "e2e",
    ):
        assert part in listing.stdout
