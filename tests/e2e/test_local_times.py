"""The pages show times in the viewer's time zone, named (issue 19, "Also: time zones").

Chromium is started with the TZ environment variable forced to a zone far from UTC; the
video-setup page and the student page, served by the real gateway on the seeded demo,
must show each session's start converted to that zone and name it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text

from devtools.seed.demo import STUDENTS, TUTORS
from devtools.soak.stack import ProcessStack
from tests.e2e.conftest import CHROMIUM_FLAGS, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

ADA = next(t for t in TUTORS if t.key == "ada")
SAM = next(s for s in STUDENTS if s.key == "sam")
VIEWER_ZONE = "America/New_York"


def shown_times(page: Page, table: str) -> dict[str, tuple[str, str, str]]:
    """Per session id: (datetime attribute, rendered text, zone) of its start in a table."""
    rows = page.locator(f"{table} tbody tr[data-session-id]")
    shown: dict[str, tuple[str, str, str]] = {}
    for i in range(rows.count()):
        cell = rows.nth(i).locator("td:first-child time")
        shown[rows.nth(i).get_attribute("data-session-id") or ""] = (
            cell.get_attribute("datetime") or "",
            cell.inner_text(),
            cell.get_attribute("data-zone") or "",
        )
    return shown


def starts_of(engine: Engine, ids: list[str]) -> dict[str, str]:
    """The sessions' starts as the database holds them, as UTC instants to the second."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id::text, scheduled_start_at FROM sessions WHERE id::text = ANY(:ids)"),
            {"ids": ids},
        )
        return {i: m.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for i, m in found}


def assert_in_viewer_zone(shown: dict[str, tuple[str, str, str]]) -> None:
    assert shown, "no session times on the page"
    for instant, rendered, zone in shown.values():
        local = datetime.strptime(instant, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        local = local.astimezone(ZoneInfo(VIEWER_ZONE))
        assert zone == VIEWER_ZONE
        # the zone named (its short name and its IANA name), the time converted to it
        assert f"({VIEWER_ZONE})" in rendered, rendered
        assert str(local.tzname()) in rendered, rendered
        assert f"{local.hour % 12 or 12}:{local:%M}" in rendered, rendered
        assert local.strftime("%b") in rendered and str(local.day) in rendered, rendered
        assert "UTC" not in rendered, rendered


def test_pages_show_times_in_the_viewers_zone(running_stack: ProcessStack, engine: Engine) -> None:
    from playwright.sync_api import sync_playwright

    stack = running_stack
    subprocess.run(
        [sys.executable, "-m", "services.cli", "seed", "demo"],
        env=stack.env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(),
            args=CHROMIUM_FLAGS,
            env={**os.environ, "TZ": VIEWER_ZONE},
        )
        try:
            for email, path in (
                (ADA.email, "/tutor/video-setup"),
                (SAM.email, "/student/sessions"),
            ):
                page = browser.new_context(locale="en-US").new_page()
                page.goto(f"{stack.gateway_url}/dev/sign-in")
                page.click(f"[id='sign-in-{email}']")
                page.goto(f"{stack.gateway_url}{path}")
                page.wait_for_selector("#sessions time[data-zone]")
                shown = shown_times(page, "#sessions")
                # each row's instant is its session's start, as stored
                assert {i: v[0] for i, v in shown.items()} == starts_of(engine, list(shown))
                assert_in_viewer_zone(shown)
        finally:
            browser.close()
