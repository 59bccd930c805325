"""Every text template, rendered and read line by line: one field per line, paragraphs apart.

`trim_blocks` eats the newline after a block tag, so a `{% endif %}` at the end of
a line used to run two lines together ("…(60 minutes)  New link: http://…").
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.notifier.adapters.emails import (
    TEMPLATES,
    DelayNotice,
    DisconnectNotice,
    FailedSession,
    Rendered,
    RollbackSummary,
    SessionNotice,
    SwitchSummary,
    render_delay_notice,
    render_disconnect_notice,
    render_rollback_summary,
    render_session_notice,
    render_switch_summary,
)
from services.notifier.domain import NoticeKind

STARTS = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
WHEN = "Monday 2 March 2026, 15:00 GMT (Europe/London)"
LINK = "https://meet.google.com/abc-defg-hij"
SETUP = "https://relink.test/tutor/video-setup"


def _notice(kind: str, *, duration: int | None = 60, old: str | None = "zoom") -> Rendered:
    return render_session_notice(
        SessionNotice(
            kind=kind,
            student_name="Sam",
            student_timezone="Europe/London",
            tutor_name="Ada",
            topic="Algebra",
            starts_at=STARTS,
            duration_minutes=duration,
            from_provider=old,
            to_provider="google_meet",
            join_url=LINK,
        )
    )


STUDENT_EMAILS: dict[str, tuple[Rendered, list[str]]] = {
    "session_moved": (
        _notice(NoticeKind.SESSION_MOVED),
        [
            "Hello Sam,",
            "",
            "Ada now teaches on Google Meet, so your session has moved from Zoom to Google Meet.",
            "",
            "  Session:  Algebra",
            f"  When:     {WHEN} (60 minutes)",
            f"  New link: {LINK}",
            "",
            "Please use this new link to join. The old Zoom link will no longer be used.",
            "",
            "— relink, on behalf of Ada",
        ],
    ),
    "session_moved, no duration, no old provider": (
        _notice(NoticeKind.SESSION_MOVED, duration=None, old=None),
        [
            "Hello Sam,",
            "",
            "Ada now teaches on Google Meet, so your session has moved from your previous "
            "provider to Google Meet.",
            "",
            "  Session:  Algebra",
            f"  When:     {WHEN}",
            f"  New link: {LINK}",
            "",
            "Please use this new link to join.",
            "",
            "— relink, on behalf of Ada",
        ],
    ),
    "session_recreated": (
        _notice(NoticeKind.SESSION_RECREATED),
        [
            "Hello Sam,",
            "",
            "The Google Meet meeting of your session with Ada was deleted, so",
            "Ada made a new one. The old link no longer works.",
            "",
            "  Session:  Algebra",
            f"  When:     {WHEN} (60 minutes)",
            f"  New link: {LINK}",
            "",
            "Please use this new link to join.",
            "",
            "— relink, on behalf of Ada",
        ],
    ),
    "session_cancelled": (
        _notice(NoticeKind.SESSION_CANCELLED),
        [
            "Hello Sam,",
            "",
            "Your session with Ada is cancelled. Its meeting link no longer works.",
            "",
            "  Session:  Algebra",
            f"  When:     {WHEN} (60 minutes)",
            "",
            "The calendar update attached removes it from your calendar.",
            "",
            "— relink, on behalf of Ada",
        ],
    ),
    "session_restored": (
        _notice(NoticeKind.SESSION_RESTORED),
        [
            "Hello Sam,",
            "",
            "Ada went back to Google Meet: your session is on Google Meet again, with its "
            "previous link.",
            "",
            "  Session: Algebra",
            f"  When:    {WHEN} (60 minutes)",
            f"  Link:    {LINK}",
            "",
            "Please use this link to join; the Zoom link you were sent before will no longer "
            "be used.",
            "",
            "— relink, on behalf of Ada",
        ],
    ),
}


@pytest.mark.parametrize("case", list(STUDENT_EMAILS))
def test_student_email_text_reads_line_by_line(case: str) -> None:
    rendered, lines = STUDENT_EMAILS[case]
    assert rendered.text.splitlines() == lines


def _tutor_emails() -> dict[str, Rendered]:
    failures = [
        FailedSession("Algebra", "Sam", "Mon 2 Mar, 15:00", "the meeting could not be created"),
        FailedSession("Calculus", "María", "Tue 3 Mar, 10:00", "Zoom refused the request"),
    ]
    return {
        "tutor_summary, all moved": render_switch_summary(
            SwitchSummary("Ada", "zoom", "google_meet", 5, 5, 0, SETUP)
        ),
        "tutor_summary, some failed": render_switch_summary(
            SwitchSummary("Ada", "zoom", "google_meet", 5, 3, 2, SETUP, failures)
        ),
        "tutor_summary, nothing to move": render_switch_summary(
            SwitchSummary("Ada", "zoom", "google_meet", 0, 0, 0, SETUP)
        ),
        "tutor_rollback, restored": render_rollback_summary(
            RollbackSummary("Ada", "zoom", "google_meet", 3, 1, SETUP)
        ),
        "tutor_rollback, nothing moved": render_rollback_summary(
            RollbackSummary("Ada", "zoom", "google_meet", 0, 0, SETUP)
        ),
        "tutor_delayed": render_delay_notice(
            DelayNotice("Ada", "Europe/London", "google_meet", 10, 4, STARTS, SETUP)
        ),
        "tutor_delayed_usage": render_delay_notice(
            DelayNotice("Ada", "Europe/London", "google_meet", 10, 4, None, SETUP)
        ),
        "tutor_disconnected": render_disconnect_notice(
            DisconnectNotice("Ada", "Europe/London", "zoom", 3, STARTS, SETUP)
        ),
    }


TUTOR_EMAILS = _tutor_emails()


@pytest.mark.parametrize("case", list(TUTOR_EMAILS))
def test_tutor_email_text_reads_line_by_line(case: str) -> None:
    """Each count, link and signature on its own line, each paragraph after a blank line."""
    lines = TUTOR_EMAILS[case].text.splitlines()
    assert lines[:2] == ["Hello Ada,", ""]
    assert lines[-2:] == ["", "— relink"]
    for number, line in enumerate(lines):
        assert line == line.rstrip(), f"line {number} ends in spaces: {line!r}"
        # a field's label begins its line: never two "Label: value" run together
        assert line.count("Sessions ") <= 1, f"line {number} runs two lines together: {line!r}"
        assert line.count(" - ") <= 1, f"line {number} runs two failures together: {line!r}"
        if SETUP in line:
            assert line in (f"Video setup: {SETUP}", SETUP), line
        if line.startswith("Video setup:") or line.startswith("Reconnect "):
            assert lines[number - 1] == "", f"no blank line before {line!r}"
        if line.startswith("  - ") and ":" in line and "with" in line:
            assert line.startswith(("  - Algebra with Sam", "  - Calculus with María")), line
    # every sentence the template writes after a list of counts starts a paragraph
    for sentence in (
        "Every session moved",
        "These sessions keep",
        "Your students have been emailed",
        "No upcoming session",
        "relink keeps trying",
    ):
        for n, line in enumerate(lines):
            if sentence in line:
                assert line.startswith(sentence), f"{case}: {sentence!r} runs on in {line!r}"
                assert lines[n - 1] == "", f"{case}: {sentence!r} runs on from {lines[n - 1]!r}"


def test_every_text_template_is_covered() -> None:
    """A new template gets a case here too."""
    covered = {case.split(",")[0] for case in [*STUDENT_EMAILS, *TUTOR_EMAILS]}
    assert covered == {path.stem for path in TEMPLATES.glob("*.txt")}
