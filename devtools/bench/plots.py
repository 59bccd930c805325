"""PNG plots of benchmarks/results.json (matplotlib, Agg): drawn from the record, never measured.

Each plot needs only its own part's figures; a plot whose figures are missing
is skipped and named in the returned report, so a partial record still draws.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

RELINK, BASELINE, NAIVE = "#2b6cb0", "#c05621", "#718096"
DEFAULT_PLOTS_DIR = Path("benchmarks/plots")


@dataclass
class PlotReport:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _by_number(figures: dict[str, Any]) -> list[tuple[int, float]]:
    """A `{"1000": 12.5, ...}` mapping as (number, value) pairs, smallest first."""
    return sorted((int(key), float(value)) for key, value in figures.items())


def _labels(points: list[int]) -> list[str]:
    return [f"{p:,}" for p in points]


def callback_latency(results: dict[str, Any]) -> Figure:
    """Callback p50/p99 per number of future sessions: relink beside the inline baseline."""
    gateway = results["gateway"]
    p50, p99 = (
        dict(_by_number(gateway["callback_p50_ms"])),
        dict(_by_number(gateway["callback_p99_ms"])),
    )
    inline = results.get("baseline", {})
    b50 = dict(_by_number(inline.get("inline_callback_p50_ms", {})))
    b99 = dict(_by_number(inline.get("inline_callback_p99_ms", {})))
    points = sorted(set(p50) | set(b50))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    width = 0.2
    series = [
        ("relink p50", p50, RELINK, 0.55),
        ("relink p99", p99, RELINK, 1.0),
        ("inline baseline p50", b50, BASELINE, 0.55),
        ("inline baseline p99", b99, BASELINE, 1.0),
    ]
    for i, (label, values, color, alpha) in enumerate(series):
        xs = [n + (i - 1.5) * width for n in range(len(points))]
        ys = [values.get(p, 0.0) for p in points]
        bars = ax.bar(xs, ys, width, label=label, color=color, alpha=alpha)
        ax.bar_label(
            bars, labels=[_ms(v) if v else "" for v in ys], fontsize=7, rotation=90, padding=2
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(points)), _labels(points))
    ax.set_xlabel("future sessions per tutor")
    ax.set_ylabel("OAuth callback latency (ms, log scale)")
    ax.set_title("Callback latency: relink vs migrating inline (same run)")
    ax.legend(fontsize=8, loc="upper left")
    ax.margins(y=0.25)
    return fig


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def migration_throughput(results: dict[str, Any]) -> Figure:
    """Sessions/s against concurrency and against provider latency (the migrator sweep)."""
    sweep = results["migrator"]["sweep"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, xlabel, fixed in (
        (left, "by_concurrency", "RELINK_MIGRATOR_CONCURRENCY", "latency_ms"),
        (right, "by_latency_ms", "provider latency (ms)", "concurrency"),
    ):
        rows = sorted(sweep[key], key=lambda r: r["x"])
        xs = [r["x"] for r in rows]
        ax.plot(xs, [r["sessions_per_s"] for r in rows], "o-", color=RELINK, label="measured")
        bounded = [r for r in rows if r.get("bound_sessions_per_s")]
        if bounded:
            ax.plot(
                [r["x"] for r in bounded],
                [r["bound_sessions_per_s"] for r in bounded],
                "--",
                color=NAIVE,
                label="bound: concurrency / latency",
            )
        if key == "by_concurrency":
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("sessions migrated per second")
        ax.set_title(
            f"at {fixed.replace('_ms', '')} {sweep[fixed]}{' ms' if fixed == 'latency_ms' else ''}"
        )
        ax.set_ylim(bottom=0, top=max(r["sessions_per_s"] for r in rows) * 1.6 or 1)
        ax.legend(fontsize=8)
    fig.suptitle("Migration throughput (outbox → relay → Kafka → migrator → simulator)")
    fig.tight_layout()
    return fig


def relay(results: dict[str, Any]) -> Figure:
    """Relay events/s beside the naive one-row relay; commit-to-append latency."""
    figures = results["relay"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    names = ["relink relay", "naive relay"]
    values = [figures["throughput_eps"], figures["naive_throughput_eps"]]
    bars = left.bar(names, values, color=[RELINK, NAIVE])
    left.bar_label(bars, labels=[f"{v:,.0f}/s" for v in values])
    left.set_ylabel("events published per second")
    left.set_title(f"throughput, {figures.get('rows', '?'):,} rows waiting")
    stats = [("p50", "latency_p50_ms"), ("p99", "latency_p99_ms"), ("max", "latency_max_ms")]
    shown = [(label, figures[key]) for label, key in stats if key in figures]
    bars = right.bar([s[0] for s in shown], [s[1] for s in shown], color=RELINK)
    right.bar_label(bars, labels=[f"{s[1]} ms" for s in shown])
    right.set_ylabel("commit → broker append (ms)")
    right.set_title(f"latency at {figures.get('latency_rate_eps', '?')} events/s")
    fig.suptitle("Outbox relay")
    fig.tight_layout()
    return fig


def replay(results: dict[str, Any]) -> Figure:
    """Audit replay events/s (and the emails/s beside it)."""
    figures = results["notifier"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    bars = ax.bar(["audit replay"], [figures["replay_eps"]], color=RELINK, width=0.5)
    ax.bar_label(bars, labels=[f"{figures['replay_eps']:,.0f} events/s"])
    ax.set_ylabel("events per second")
    events = figures.get("replay_events")
    ax.set_title(f"relink audit replay from {events:,} events" if events else "relink audit replay")
    ax.margins(y=0.2)
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "callback_latency.png": callback_latency,
    "migration_throughput.png": migration_throughput,
    "relay.png": relay,
    "replay.png": replay,
}


def draw(results: dict[str, Any], out_dir: Path) -> PlotReport:
    """Write every plot whose figures are in `results` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PlotReport()
    for name, plot in PLOTS.items():
        try:
            fig = plot(results)
        except (KeyError, TypeError, ValueError) as exc:
            report.skipped[name] = f"figures missing or malformed ({exc!r})"
            continue
        try:
            path = out_dir / name
            fig.savefig(path, dpi=110)
            report.written.append(path)
        finally:
            plt.close(fig)
    return report


def draw_file(results_path: Path, out_dir: Path) -> PlotReport:
    """Read a results file and draw its plots."""
    return draw(json.loads(results_path.read_text()), out_dir)
