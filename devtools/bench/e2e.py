"""`relink bench e2e`: a tutor's switch end to end, and `make run` from a fresh clone.

- `switch_to_last_email_p99_s`: from the tutor's click on the consent screen
  to the last of their students' emails arriving at the SMTP sink, for a
  tutor with 5 sessions at 100 ms provider latency, through every real process.
- `make_run_s`: from `git clone` to the video-setup page being served by
  `make run` (warm package caches; its own devstack ports).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console

from devtools.bench.results import record

console = Console()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def switch_to_last_email(
    *, tutors: int = 10, sessions: int = 5, latency_ms: int = 100
) -> dict[str, float]:
    """Time tutors' switches from consent click to their students' last email."""
    from devtools.devstack.stack import Devstack
    from devtools.soak.run import SoakDriver, SoakTally, new_database
    from devtools.soak.stack import ProcessStack
    from services.core.kafka import create_topics
    from services.core.settings import CommonSettings

    devstack = Devstack()
    started = devstack.up()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    database_url = new_database(devstack.database_url)
    create_topics(
        CommonSettings(KAFKA_BOOTSTRAP_SERVERS=devstack.kafka_bootstrap, RELINK_TOPIC_PREFIX=prefix)
    )
    workdir = Path(tempfile.mkdtemp(prefix="relink-bench-e2e-"))
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=devstack.kafka_bootstrap,
        topic_prefix=prefix,
        workdir=workdir,
        extra_env={"RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2"},
    )
    from services.core.db.engine import make_engine

    engine = make_engine(database_url)
    timings: list[float] = []
    seen = 0  # inbox messages read so far
    try:
        stack.start()
        driver = SoakDriver(stack, engine, SoakTally(), random.Random(3))
        for i in range(tutors):
            tutor = driver.make_tutor(i, students=sessions)
            driver.connect(tutor, "zoom")
            for student in tutor.students[:sessions]:
                tutor.students = [student]
                driver.book(tutor, days_ahead=2 + i)
            emails = {
                row[0]
                for row in engine.connect().exec_driver_sql(
                    "SELECT u.email FROM sessions s JOIN users u ON u.id = s.student_id "
                    f"WHERE s.tutor_id = '{tutor.id}'"
                )
            }
            for provider in ("zoom", "google"):
                httpx.put(
                    f"{stack.sim_url}/_admin/faults/{provider}",
                    json={"latency_ms": latency_ms},
                    timeout=5,
                )
            clicked = time.monotonic()
            driver.connect(tutor, "google_meet")
            deadline = clicked + 120
            got: set[str] = set()
            while time.monotonic() < deadline:
                # only what arrived since the last look (the inbox keeps every run's mail)
                mails = httpx.get(
                    f"{stack.inbox_url}/messages.json", params={"since": seen}, timeout=10
                ).json()
                seen += len(mails)
                got |= {r for m in mails for r in m["to"] if "Google Meet" in m["subject"]}
                if emails <= got:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"tutor {i}: not every student was emailed within 120 s")
            timings.append(time.monotonic() - clicked)
            for provider in ("zoom", "google"):
                httpx.delete(f"{stack.sim_url}/_admin/faults/{provider}", timeout=5)
    finally:
        stack.stop()
        engine.dispose()
        devstack.down(parts=tuple(started.started))
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "switch_to_last_email_p50_s": round(_percentile(timings, 0.5), 2),
        "switch_to_last_email_p99_s": round(_percentile(timings, 0.99), 2),
        "switch_to_last_email_runs": len(timings),
    }


def make_run_seconds(*, repo: Path, timeout: float = 600.0) -> float:
    """Clone the repository and time `make run` until the video-setup page is served."""
    folder = Path(tempfile.mkdtemp(prefix="relink-make-run-"))
    env = {
        **os.environ,
        "RELINK_DEVSTACK_PG_PORT": "54601",
        "RELINK_DEVSTACK_KAFKA_PORT": "19601",
        "RELINK_DEVSTACK_KAFKA_CONTROLLER_PORT": "19602",
    }
    for key in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "VIRTUAL_ENV"):
        env.pop(key, None)
    start = time.monotonic()
    subprocess.run(["git", "clone", "-q", str(repo), str(folder / "relink")], check=True)
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=folder / "relink",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.monotonic() - start < timeout:
            try:
                page = httpx.get("http://127.0.0.1:18000/dev/sign-in", timeout=1)
                if page.status_code == 200 and "Ada Lovelace" in page.text:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"make run exited with {proc.returncode}")
            time.sleep(0.5)
        raise RuntimeError("make run did not serve the page in time")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def run(*, tutors: int = 10, make_run: bool = True) -> dict[str, float]:
    figures = switch_to_last_email(tutors=tutors)
    record("e2e", figures)
    if make_run:
        figures["make_run_s"] = round(make_run_seconds(repo=Path.cwd()), 1)
    record("e2e", figures)
    console.print(figures)
    return figures
