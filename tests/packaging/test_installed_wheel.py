"""The wheel, installed as a user installs it, works on its own.

Every other test imports relink from the editable checkout, where files beside
the package (the top-level `schemas/`) are always found. This one builds the
wheel, installs it NON-editable into a fresh venv in a temporary folder, and
runs everything from there with the working directory outside the checkout,
so nothing can come from the source tree: the event schemas, the templates,
the migrations and the entry points all have to be in the wheel.

The product's wheel holds no workshop file. The switch needs the workshop's
provider simulator and SMTP sink, so the workshop's wheel (built from the
checkout's `devtools/`) is installed beside it, also non-editable; the
product's processes still run from the product's wheel.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from devtools.soak.run import SoakDriver, SoakTally
from devtools.soak.stack import ProcessStack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What must not leak from the test's own environment into the installed venv.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path  # outside the checkout: the processes' cwd

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def relink(self) -> Path:
        return self.venv / "bin" / "relink"


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return {**env, **(extra or {})}


def _run(args: list[str | Path], *, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed-wheel")
    assert not base.resolve().is_relative_to(ROOT), "the install must live outside the checkout"
    dist = base / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, ROOT],
        cwd=base,
    )
    (wheel,) = dist.glob("relink-*.whl")
    # The workshop's wheel, built from a copy so no build output lands in the checkout.
    workshop = base / "devtools-src"
    shutil.copytree(
        ROOT / "devtools",
        workshop,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, workshop],
        cwd=base,
    )
    (workshop_wheel,) = dist.glob("relink_devtools-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=base)
    # Non-editable, dependencies from the index (pip's cache when it has them);
    # --no-compile skips byte-compiling ~100 packages, which is most of the time.
    _run(
        [venv / "bin" / "python", "-m", "pip", "install", "--no-compile", wheel, workshop_wheel],
        cwd=base,
    )
    workdir = base / "run"
    workdir.mkdir()
    found = Installed(venv=venv, workdir=workdir)
    where = _run(
        [found.python, "-c", "import services; print(services.__file__)"], cwd=workdir
    ).strip()
    assert Path(where).is_relative_to(venv), f"services imported from {where}, not the venv"
    return found


def test_the_product_wheel_holds_no_workshop_file(tmp_path: Path) -> None:
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp_path, ROOT],
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("relink-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.startswith("services/") for n in names)
    workshop = [n for n in names if n.startswith("devtools") or "/devtools/" in n]
    assert not workshop, f"the product's wheel carries workshop files: {workshop[:5]}"
    tops = {n.split("/", 1)[0] for n in names if ".dist-info/" not in n}
    assert tops == {"services"}, tops


# Run by the installed interpreter: every schema loads, and one event of each
# type (its schema's first example) goes through build -> Kafka message -> parse.
_EVENTS_SCRIPT = r"""
import json
from services.core import events

done = {}
for kind in events.EventType:
    schema = events.load_schema(str(kind))
    sample = dict(schema["examples"][0])
    tutor = sample.get("tutor_id", "7d0c1b52-0000-4000-8000-000000000001")
    event = events.new_event(str(kind), sample, tutor_id=tutor, source="/wheel-test")
    message = events.to_message(event)
    parsed = events.parse_message(
        key=message.key, value=message.value, headers=message.headers
    )
    assert parsed.data == sample and parsed.type == str(kind), kind
    done[str(kind)] = schema["$id"]
asyncapi = events.SCHEMAS_DIR / "asyncapi.yaml"
print(json.dumps({"events": done, "asyncapi": asyncapi.is_file(), "dir": str(events.SCHEMAS_DIR)}))
"""


def test_every_schema_loads_and_each_event_type_round_trips(installed: Installed) -> None:
    out = json.loads(_run([installed.python, "-c", _EVENTS_SCRIPT], cwd=installed.workdir))
    on_disk = {p.parent.name for p in (ROOT / "schemas").glob("*/v1.json")}
    assert set(out["events"]) == on_disk
    assert out["asyncapi"] is True
    assert Path(out["dir"]).is_relative_to(installed.venv)


class InstalledStack(ProcessStack):
    """The processes `make run` starts, each run by the installed `relink` script."""

    def __init__(self, installed: Installed, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.installed = installed
        self.env = _clean_env({k: v for k, v in self.env.items() if k not in SCRUBBED})

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        try:
            return subprocess.Popen(
                [str(self.installed.relink), name],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.installed.workdir,
                start_new_session=True,
            )
        finally:
            log.close()

    def output(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def wait_log(self, name: str, pattern: str, *, timeout: float = 90) -> None:
        """Wait for a process's readiness line; fail early if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output(name)):
                return
            process = self.processes[name].proc
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}):\n{self.output(name)}")
            time.sleep(0.2)
        raise AssertionError(f"{name} never logged {pattern!r}:\n{self.output(name)[-3000:]}")


@pytest.fixture
def installed_stack(
    installed: Installed,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> Iterator[InstalledStack]:
    stack = InstalledStack(
        installed,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        extra_env={"RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2"},
    )
    try:
        # provider-sim, smtp-sink and gateway are ready when their health URL answers
        stack.start(timeout=90)
        # the relay says it started its loop; the migrator logs its partition assignment
        stack.wait_log("relay", r"relay \d+ of \d+ starting")
        stack.wait_log("migrator", r"Setting newly assigned partitions")
        yield stack
    finally:
        stack.stop()


def _switch_state(engine: Engine, switch_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                # PENDING until the migrator has made the switch's progress row
                text(
                    "SELECT coalesce(p.state, 'PENDING') FROM switch_requests r "
                    "LEFT JOIN provider_switches p ON p.id = r.id WHERE r.id = :id"
                ),
                {"id": switch_id},
            ).scalar_one()
        )


def test_a_switch_runs_through_the_installed_processes(
    installed_stack: InstalledStack, engine: Engine
) -> None:
    stack = installed_stack
    driver = SoakDriver(stack, engine, SoakTally(), random.Random(15))
    tutor = driver.make_tutor(1, students=2)
    assert driver.connect(tutor, "zoom") is None  # the first connection moves nothing
    for days in (2, 3):
        assert driver.book(tutor, days_ahead=days)

    switch_id = driver.connect(tutor, "google_meet")
    assert switch_id is not None

    deadline = time.monotonic() + 120
    state = _switch_state(engine, switch_id)
    while time.monotonic() < deadline and state not in ("COMPLETED", "COMPLETED_WITH_FAILURES"):
        time.sleep(0.5)
        state = _switch_state(engine, switch_id)
    assert state == "COMPLETED", f"switch ended {state}:\n{stack.output('migrator')[-3000:]}"

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.provider, s.join_url, u.email FROM sessions s "
                "JOIN users u ON u.id = s.student_id WHERE s.tutor_id = :t"
            ),
            {"t": tutor.id},
        ).all()
    assert len(rows) == 2
    assert all(row.provider == "google_meet" and "/google/meet/" in row.join_url for row in rows)

    # the notifier read session.migrated from Kafka and mailed each booked student
    students = {row.email for row in rows}
    deadline = time.monotonic() + 60
    mailed: set[str] = set()
    while time.monotonic() < deadline and not mailed >= students:
        mails = httpx.get(f"{stack.inbox_url}/messages.json", timeout=10).json()
        mailed = {e for e in students if any(e in str(m["to"]) for m in mails)}
        time.sleep(0.5)
    assert mailed >= students, f"not every student mailed:\n{stack.output('notifier')[-3000:]}"

    for name in ("gateway", "relay", "migrator", "notifier"):
        log = stack.output(name)
        assert "unknown_type" not in log and "Traceback" not in log, f"{name}:\n{log[-3000:]}"


def test_the_installed_wheel_has_no_source_tree_beside_it(installed: Installed) -> None:
    # The packaged schemas are files of the install, not a link back to the checkout.
    found = list((installed.venv / "lib").glob("python3*/site-packages/services/core/schemas"))
    assert len(found) == 1, "the wheel carries no services/core/schemas"
    schemas = found[0]
    assert schemas.is_dir() and not schemas.is_symlink()
    assert {p.parent.name for p in schemas.glob("*/v1.json")} == {
        p.parent.name for p in (ROOT / "schemas").glob("*/v1.json")
    }
