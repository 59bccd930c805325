"""`relink bench <part>`: each command measures one part and records its figures."""

from __future__ import annotations

import typer

app = typer.Typer(help="Measure a part and record its figures in benchmarks/results.json.")


@app.command("devstack")
def bench_devstack(
    runs: int = typer.Option(1, min=1, help="how many up/down cycles to time"),
) -> None:
    """Time `relink dev up` cold (empty data dirs) and warm, and the broker's memory."""
    from services.devstack.bench import run

    run(runs=runs)


@app.command("providers")
def bench_providers(
    seconds: float = typer.Option(3.0, min=0.5, help="how long to measure each point"),
) -> None:
    """Meeting creates per second through the Zoom client (0/100 ms latency, c1/c10/c100)."""
    from services.providers.bench import run

    run(seconds=seconds)


@app.command("relay")
def bench_relay(
    rows: int = typer.Option(100_000, min=1000, help="rows waiting for the throughput run"),
    big_rows: int = typer.Option(
        1_000_000, min=0, help="rows waiting for the memory run (0: skip)"
    ),
    naive_s: float = typer.Option(20.0, min=1, help="time box of the naive one-row relay"),
) -> None:
    """Outbox → Kafka throughput (vs a naive relay), commit-to-publish latency, memory."""
    from services.relay.bench import run

    run(rows=rows, big_rows=big_rows, naive_s=naive_s)


@app.command("notifier")
def bench_notifier(
    events: int = typer.Option(1_000_000, min=1000, help="events on the topics for the replay"),
    emails: int = typer.Option(1000, min=10, help="emails to deliver"),
) -> None:
    """Audit replay events/s and memory from N events; emails delivered per second."""
    from services.notifier.bench import run

    run(replay_events=events, emails=emails)


@app.command("gateway")
def bench_gateway(
    tutors: int = typer.Option(20, min=1, help="tutors sending callbacks at once"),
    per_tutor: int = typer.Option(25, min=1, help="callbacks each tutor sends per point"),
) -> None:
    """OAuth callback p50/p99 at 0/1k/10k future sessions per tutor, and callbacks/s."""
    import importlib.util
    from pathlib import Path

    # The harness lives under benchmarks/ (not an installed package): load it by path.
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway" / "harness.py"
    spec = importlib.util.spec_from_file_location("relink_bench_gateway", path)
    if spec is None or spec.loader is None:
        raise typer.BadParameter(f"harness not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(tutors=tutors, per_tutor=per_tutor)


@app.command("migrator")
def bench_migrator(
    tutors: int = typer.Option(1000, min=1, help="tutors switching at once"),
    sessions: int = typer.Option(20, min=1, help="future sessions per tutor"),
    latency_ms: int = typer.Option(100, min=0, help="simulated provider latency"),
    concurrency: int = typer.Option(100, min=1, help="RELINK_MIGRATOR_CONCURRENCY"),
    big: int = typer.Option(100_000, min=100, help="sessions of the memory run's tutor"),
    rss_seconds: float = typer.Option(60.0, min=1, help="how long to watch memory per run"),
) -> None:
    """Sessions/s through outbox, relay, Kafka, migrator and simulator; switch-to-done; memory."""
    from services.migrator.bench import run

    run(
        tutors=tutors,
        sessions=sessions,
        latency_ms=latency_ms,
        concurrency=concurrency,
        big=big,
        rss_seconds=rss_seconds,
    )


@app.command("e2e")
def bench_e2e(
    tutors: int = typer.Option(10, min=1, help="switches to time (one tutor each)"),
    make_run: bool = typer.Option(True, help="also time `make run` from a fresh clone"),
) -> None:
    """Consent click to the last student's email (5 sessions, 100 ms latency); make run."""
    from services.bench.e2e import run

    run(tutors=tutors, make_run=make_run)
