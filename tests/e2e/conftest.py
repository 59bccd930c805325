"""A real browser for end-to-end tests: Debian's Chromium driven by Playwright.

Playwright's own browser download cannot work on these machines, so the
system Chromium is launched through `executable_path`. Screenshots go to
`test-artifacts/` (kept by CI as artifacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # playwright is the `browser` extra, imported only when used
    from playwright.sync_api import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("RELINK_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "Debian's chromium is needed for the browser test: `make test` installs it "
            "(apt-get install chromium); or set RELINK_CHROMIUM to a Chromium binary"
        )
    return found


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Function scope: Playwright's sync API keeps an asyncio loop running while it
    # is open, which would break every async test that runs after it.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    name: str = request.node.name
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def running_stack(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[object]:
    """Every relink process, as `make run` starts them, on this test's database and topics."""
    from devtools.soak.stack import ProcessStack

    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        extra_env={"RELINK_MIGRATOR_POLL_INTERVAL_S": "0.2"},
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
