"""`relink bench <part>`: each command measures one part and records its figures."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Measure a part and record its figures in benchmarks/results.json "
    "(no subcommand: `relink bench all`)."
)

QUICK_OPTION = typer.Option(
    False, "--quick", help="small numbers everywhere: a smoke run in minutes, not a report"
)


@app.callback(invoke_without_command=True)
def bench_main(ctx: typer.Context, quick: bool = QUICK_OPTION) -> None:
    """Without a subcommand, run every benchmark and draw the plots (`relink bench all`)."""
    if ctx.invoked_subcommand is None:
        from devtools.bench.suite import run_all

        raise typer.Exit(run_all(quick=quick))


@app.command("all")
def bench_all(
    quick: bool = QUICK_OPTION,
    results: Path | None = typer.Option(
        None,
        help="results file (default benchmarks/results.json; with --quick "
        "benchmarks/quick/results.json, so a smoke run never overwrites the report)",
    ),
    skip: list[str] = typer.Option([], help="a part to leave out (repeatable)"),
) -> None:
    """Every benchmark (gateway with the inline baseline, migrator sweep...), then the plots."""
    from devtools.bench.suite import run_all

    raise typer.Exit(run_all(quick=quick, results=results, skip=tuple(skip)))


@app.command("plots")
def bench_plots(
    results: Path = typer.Option(Path("benchmarks/results.json"), help="results file to draw"),
    out: Path | None = typer.Option(None, help="folder of the PNGs (default: plots/ beside it)"),
) -> None:
    """Re-draw the PNG plots from a results file, measuring nothing."""
    from devtools.bench.plots import draw_file

    report = draw_file(results, out or results.parent / "plots")
    for path in report.written:
        typer.echo(f"wrote {path}")
    for name, why in report.skipped.items():
        typer.echo(f"skipped {name}: {why}")


@app.command("devstack")
def bench_devstack(
    runs: int = typer.Option(1, min=1, help="how many up/down cycles to time"),
) -> None:
    """Time `relink dev up` cold (empty data dirs) and warm, and the broker's memory."""
    from devtools.bench.devstack import run

    run(runs=runs)


@app.command("providers")
def bench_providers(
    seconds: float = typer.Option(3.0, min=0.5, help="how long to measure each point"),
) -> None:
    """Meeting creates per second through the Zoom client (0/100 ms latency, c1/c10/c100)."""
    from devtools.bench.providers import run

    run(seconds=seconds)


@app.command("relay")
def bench_relay(
    rows: int = typer.Option(100_000, min=1000, help="rows waiting for the throughput run"),
    big_rows: int = typer.Option(
        1_000_000, min=0, help="rows waiting for the memory run (0: skip)"
    ),
    naive_s: float = typer.Option(20.0, min=1, help="time box of the naive one-row relay"),
    classic: bool = typer.Option(
        True, help="after the peer's way, also the older figures (naive, latency, memory)"
    ),
) -> None:
    """Outbox → Kafka the peer's way (from launch, CPU), then vs naive, latency, memory."""
    from devtools.bench.relay import run

    run(rows=rows, big_rows=big_rows, naive_s=naive_s, classic=classic)


@app.command("notifier")
def bench_notifier(
    events: int = typer.Option(1_000_000, min=1000, help="events on the topics for the replay"),
    emails: int = typer.Option(1000, min=10, help="emails to deliver"),
) -> None:
    """Audit replay events/s and memory from N events; emails delivered per second."""
    from devtools.bench.notifier import run

    run(replay_events=events, emails=emails)


@app.command("gateway")
def bench_gateway(
    tutors: int = typer.Option(20, min=1, help="tutors sending callbacks at once"),
    per_tutor: int = typer.Option(25, min=1, help="callbacks each tutor sends per point"),
    baseline: bool = typer.Option(True, help="also measure the brief's inline callback"),
    baseline_tutors: int = typer.Option(5, min=1, help="tutors at once for the inline baseline"),
) -> None:
    """OAuth callback p50/p99 at 0/1k/10k future sessions per tutor, relink vs inline."""
    from devtools.bench.gateway import run

    run(tutors=tutors, per_tutor=per_tutor, baseline=baseline, baseline_tutors=baseline_tutors)


@app.command("migrator")
def bench_migrator(
    tutors: int = typer.Option(1000, min=1, help="tutors switching at once"),
    sessions: int = typer.Option(20, min=1, help="future sessions per tutor"),
    latency_ms: int = typer.Option(100, min=0, help="simulated provider latency"),
    concurrency: int = typer.Option(
        50, min=1, help="RELINK_MIGRATOR_CONCURRENCY (50: a bound near what 2 cores can serve)"
    ),
    big: int = typer.Option(100_000, min=100, help="sessions of the memory run's tutor"),
    rss_seconds: float = typer.Option(60.0, min=1, help="how long to watch memory per run"),
    phases: str = typer.Option(
        "throughput,switch,rss", help="comma-separated subset of throughput,switch,rss"
    ),
) -> None:
    """Sessions/s through outbox, relay, Kafka, migrator and simulator; switch-to-done; memory."""
    from devtools.bench.migrator import PHASES, run

    chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
    if not chosen or set(chosen) - set(PHASES):
        raise typer.BadParameter(f"phases: a subset of {','.join(PHASES)}")
    run(
        phases=chosen,
        tutors=tutors,
        sessions=sessions,
        latency_ms=latency_ms,
        concurrency=concurrency,
        big=big,
        rss_seconds=rss_seconds,
    )


@app.command("migrator-sweep")
def bench_migrator_sweep(
    concurrency: list[int] = typer.Option([1, 10, 50, 100, 200], help="points (repeatable)"),
    latency_ms: list[int] = typer.Option([0, 50, 100, 200, 500], help="points (repeatable)"),
    max_sessions: int = typer.Option(1000, min=100, help="most sessions migrated at a point"),
) -> None:
    """Sessions/s against migrator concurrency (at 100 ms) and provider latency (at 100)."""
    from devtools.bench.sweep import run

    run(concurrencies=concurrency, latencies_ms=latency_ms, max_sessions=max_sessions)


@app.command("e2e")
def bench_e2e(
    tutors: int = typer.Option(10, min=1, help="switches to time (one tutor each)"),
    make_run: bool = typer.Option(True, help="also time `make run` from a fresh clone"),
) -> None:
    """Consent click to the last student's email (5 sessions, 100 ms latency); make run."""
    from devtools.bench.e2e import run

    run(tutors=tutors, make_run=make_run)


@app.command("peer")
def bench_peer(
    rows: int = typer.Option(100_000, min=100, help="rows each engine drains per round"),
    rounds: int = typer.Option(3, min=1, help="interleaved rounds (relink, peer, peer tuned)"),
    pg_port: int = typer.Option(
        55452, help="port of the bench's own PostgreSQL (wal_level=logical)"
    ),
    topic_prefix: str | None = typer.Option(
        None, help="RELINK_TOPIC_PREFIX stem of the measurements' topics (default: random)"
    ),
    tuned: bool = typer.Option(True, help="also run the peer with poll.interval.ms=10"),
    keep_topics: bool = typer.Option(
        False, help="leave the measured topics on the broker (to check them afterwards)"
    ),
    latency_s: float = typer.Option(
        20.0, min=0, help="seconds of commit -> append latency per engine (0: skip)"
    ),
    latency_rate: int = typer.Option(500, min=1, help="events/s of the latency run"),
) -> None:
    """relink's relay beside the real peer (Debezium + Outbox Event Router), interleaved."""
    import os

    from devtools.bench.peer import run

    if keep_topics:
        os.environ["RELINK_BENCH_KEEP_TOPICS"] = "1"
    run(
        rows=rows,
        rounds=rounds,
        pg_port=pg_port,
        topic_prefix=topic_prefix,
        tuned=tuned,
        latency_s=latency_s,
        latency_rate=latency_rate,
    )
