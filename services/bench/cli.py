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
