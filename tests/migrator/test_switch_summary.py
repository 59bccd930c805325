"""Per switch, one INFO line from the migrator when it settles: what it took (issue 22).

Provider requests themselves are DEBUG lines; this summary is what an operator
reads: sessions moved, provider calls sent, errors, waits (Retry-After, rate
limits, the daily quota). Real `relink migrator` processes and the simulator.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine

from tests.migrator.conftest import settled, wait_for
from tests.migrator.factory import Factory


def summary(output: str, switch_id: object) -> dict[str, int]:
    found = re.search(
        rf"switch {switch_id} settled \w+: (\d+) of (\d+) session\(s\) moved, (\d+) failed, "
        r"(\d+) skipped; this process: (\d+) provider call\(s\), (\d+) error\(s\), "
        r"(\d+) wait\(s\)",
        output,
    )
    assert found is not None, output[-4000:]
    names = ("moved", "total", "failed", "skipped", "calls", "errors", "waits")
    return dict(zip(names, (int(g) for g in found.groups()), strict=True))


async def test_a_clean_switch_is_summed_up_in_one_line(
    engine: Engine, factory: Factory, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="zoom")
    factory.sessions(tutor, count=3, provider="zoom")
    migrator = start_migrator()
    switch_id = factory.switch(tutor, to_provider="google_meet")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    wait_for(lambda: f"switch {switch_id} settled" in migrator.output(), what="summary line")
    assert summary(migrator.output(), switch_id) == {
        "moved": 3,
        "total": 3,
        "failed": 0,
        "skipped": 0,
        "calls": 3,
        "errors": 0,
        "waits": 0,
    }
    assert f"switch {switch_id} settled COMPLETED" in migrator.output()


async def test_waits_for_a_429_burst_are_counted(
    engine: Engine, factory: Factory, sim_admin: Any, relay: Any, start_migrator: Any
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    factory.sessions(tutor, count=5, provider="google_meet")
    await sim_admin.faults("zoom", tutor.email, burst_429=3, retry_after_s=1)
    migrator = start_migrator()
    switch_id = factory.switch(tutor, to_provider="zoom")
    assert wait_for(lambda: settled(engine, switch_id), what="switch settles").state == "COMPLETED"
    wait_for(lambda: f"switch {switch_id} settled" in migrator.output(), what="summary line")
    figures = summary(migrator.output(), switch_id)
    account = await sim_admin.account("zoom", tutor.email)
    assert figures["moved"] == 5 and figures["errors"] == 0
    assert figures["waits"] >= 1
    # every create Zoom saw was sent by this process and counted; the 429s were calls too
    assert figures["calls"] >= account["create_calls"] == 5
