"""The benchmark record: one committed JSON file, one top-level key per part."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

PARTS = ("devstack", "providers", "relay", "gateway", "migrator", "notifier", "e2e", "baseline")
DEFAULT_RESULTS_PATH = Path("benchmarks/results.json")


def machine_facts() -> dict[str, Any]:
    """Cores, memory and CPU model of the machine the figures come from."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "python": platform.python_version(),
    }


def record(part: str, figures: dict[str, Any], *, path: Path | None = None) -> dict[str, Any]:
    """Merge one part's figures into the results file, leaving other parts alone."""
    if part not in PARTS:
        raise ValueError(f"unknown benchmark part {part!r}; expected one of {', '.join(PARTS)}")
    path = path or Path(os.environ.get("RELINK_BENCH_RESULTS", DEFAULT_RESULTS_PATH))
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    current = data.get(part, {})
    current.update(figures)
    data[part] = current
    data["machine"] = machine_facts()
    data["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data
