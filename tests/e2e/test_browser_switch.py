"""A tutor switches Zoom → Google Meet in a real browser, through every real process.

Debian's Chromium, driven by Playwright: sign in as the demo tutor, click
"Switch to Google Meet", approve on the simulator's consent screen, land on
the video-setup page, watch the progress reach the end, read the brief's
success message with the right count; then, as a student, see the new link
and the email that announced it. Screenshots are kept in test-artifacts/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from devtools.seed.demo import SESSIONS, STUDENTS, TUTORS
from devtools.soak.stack import ProcessStack

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.slow

ADA = next(t for t in TUTORS if t.key == "ada")
SAM = next(s for s in STUDENTS if s.key == "sam")
# Ada's eligible sessions: future and SCHEDULED or JOIN_OPEN (not past, done or cancelled)
ADA_ELIGIBLE = [
    s
    for s in SESSIONS
    if s.tutor == "ada"
    and s.status in ("SCHEDULED", "JOIN_OPEN")
    and s.start_offset.total_seconds() > 0
]


def _seed(stack: ProcessStack) -> None:
    subprocess.run(
        [sys.executable, "-m", "services.cli", "seed", "demo"],
        env=stack.env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _sign_in(page, stack: ProcessStack, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{stack.gateway_url}/dev/sign-in")
    page.click(f"[id='sign-in-{email}']")


def test_tutor_switches_to_google_meet_in_a_browser(
    browser: Browser,
    running_stack: ProcessStack,
    artifacts: Path,
) -> None:
    stack = running_stack
    _seed(stack)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()

    _sign_in(page, stack, ADA.email)
    page.goto(f"{stack.gateway_url}/tutor/video-setup")
    assert page.get_attribute("#connection", "data-provider") == "zoom"
    page.screenshot(path=str(artifacts / "1-before-switch.png"), full_page=True)

    page.click("text=Switch to Google Meet")
    # the simulator's consent screen, as Google shows it
    page.wait_for_selector("form[method=post]")
    page.screenshot(path=str(artifacts / "2-consent.png"), full_page=True)
    if page.locator("input[name=email]").count():
        page.fill("input[name=email]", ADA.email)
    page.click("button[value=allow], button:has-text('Allow')")

    page.wait_for_url(re.compile(r".*/tutor/video-setup\?success=true&switch=.*"))
    assert page.get_attribute("#connection", "data-provider") == "google_meet"
    page.wait_for_function(
        "() => ['COMPLETED', 'COMPLETED_WITH_FAILURES']"
        ".includes(document.querySelector('#progress')?.dataset.state)",
        timeout=120_000,
    )
    page.wait_for_selector("#message[data-kind]")
    time.sleep(0.5)  # let the page finish re-rendering the final message
    page.screenshot(path=str(artifacts / "3-after-switch.png"), full_page=True)
    message = page.inner_text("#message")
    assert "Successfully connected video provider" in message
    assert f"{len(ADA_ELIGIBLE)} future sessions were automatically updated" in message
    assert page.get_attribute("#progress", "data-migrated") == str(len(ADA_ELIGIBLE))
    assert page.get_attribute("#progress", "data-failed") == "0"

    # the student sees the new Meet link
    student = browser.new_context().new_page()
    _sign_in(student, stack, SAM.email)
    student.goto(f"{stack.gateway_url}/student/sessions")
    rows = student.locator("#sessions tbody tr[data-provider]")
    providers = {rows.nth(i).get_attribute("data-provider") for i in range(rows.count())}
    ada_rows = student.locator("#sessions tbody tr", has_text="Ada")
    assert ada_rows.count() >= 1
    for i in range(ada_rows.count()):
        assert ada_rows.nth(i).get_attribute("data-provider") == "google_meet"
        href = ada_rows.nth(i).locator("a.join").get_attribute("href")
        assert href is not None and "/google/meet/" in href
    assert "google_meet" in providers
    student.screenshot(path=str(artifacts / "4-student-sessions.png"), full_page=True)

    # and the email that told Sam, once per session, with that link
    deadline = time.monotonic() + 60
    sams: list[dict[str, object]] = []
    sam_sessions = [s for s in ADA_ELIGIBLE if s.student == "sam"]
    while time.monotonic() < deadline and len(sams) < len(sam_sessions):
        mails = httpx.get(f"{stack.inbox_url}/messages.json", timeout=10).json()
        sams = [m for m in mails if SAM.email in m["to"]]
        time.sleep(0.5)
    assert sams, "no email reached Sam"
    assert all("Google Meet" in str(m["text"]) for m in sams)
    assert len({m["message_id"] for m in sams}) == len(sams)
    context.close()
