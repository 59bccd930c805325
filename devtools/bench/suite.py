"""`relink bench all`: every part's benchmark in turn, then the plots of the record.

A part that fails is reported and the others still run (the exit code says
so); the plots are drawn from whatever the record holds at the end.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from devtools.bench.results import DEFAULT_RESULTS_PATH

QUICK_RESULTS_PATH = Path("benchmarks/quick/results.json")
console = Console(highlight=False)


@dataclass(frozen=True)
class Part:
    name: str
    run: Callable[[], Any]


def parts(*, quick: bool) -> list[Part]:
    """Each benchmark with its report sizes, or small ones with `quick`."""
    from devtools.bench import devstack, gateway, sweep
    from devtools.bench import migrator as migrator
    from devtools.bench import notifier as notifier
    from devtools.bench import providers as providers
    from devtools.bench import relay as relay

    if quick:
        return [
            Part("devstack", lambda: devstack.run(runs=1)),
            Part("providers", lambda: providers.run(seconds=0.5)),
            Part("relay", lambda: relay.run(rows=5000, big_rows=0, naive_s=2)),
            Part(
                "gateway",
                lambda: gateway.run(tutors=3, per_tutor=3, baseline_tutors=2, baseline=True),
            ),
            Part(
                "migrator",
                lambda: migrator.run(tutors=20, sessions=10, big=500, rss_seconds=3),
            ),
            Part(
                "migrator-sweep",
                lambda: sweep.run(
                    concurrencies=(1, 10, 100), latencies_ms=(0, 100, 300), max_sessions=200
                ),
            ),
            Part("notifier", lambda: notifier.run(replay_events=5000, emails=20)),
        ]
    return [
        Part("devstack", devstack.run),
        Part("providers", providers.run),
        Part("relay", relay.run),
        Part("gateway", lambda: gateway.run()),
        Part("migrator", migrator.run),
        Part("migrator-sweep", sweep.run),
        Part("notifier", notifier.run),
    ]


def run_all(*, quick: bool = False, results: Path | None = None, skip: tuple[str, ...] = ()) -> int:
    """Run every part not skipped, then draw the plots; 0 if every part succeeded."""
    from devtools.bench.plots import draw_file

    path = results or (QUICK_RESULTS_PATH if quick else DEFAULT_RESULTS_PATH)
    previous = os.environ.get("RELINK_BENCH_RESULTS")
    os.environ["RELINK_BENCH_RESULTS"] = str(path)
    failed: list[str] = []
    try:
        for part in parts(quick=quick):
            if part.name in skip:
                console.print(f"[dim]skipping {part.name}[/dim]")
                continue
            console.print(f"[bold]relink bench {part.name}[/bold]{' (quick)' if quick else ''}")
            began = time.monotonic()
            try:
                part.run()
            except Exception:  # one part's failure must not cost the others' figures
                failed.append(part.name)
                console.print(f"[red]{part.name} failed[/red]\n{traceback.format_exc()}")
            console.print(f"  {part.name}: {time.monotonic() - began:.0f} s")
    finally:
        if previous is None:
            os.environ.pop("RELINK_BENCH_RESULTS", None)
        else:
            os.environ["RELINK_BENCH_RESULTS"] = previous
    if path.exists():
        report = draw_file(path, path.parent / "plots")
        for written in report.written:
            console.print(f"wrote {written}")
        for name, why in report.skipped.items():
            console.print(f"[yellow]skipped {name}: {why}[/yellow]")
    console.print(f"figures in {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
