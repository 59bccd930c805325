"""Pure notifier logic: change ids, Message-IDs, backoff, local times, audit facts, templates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.core import events
from services.notifier import domain
from services.notifier.adapters.emails import (
    SessionNotice,
    SwitchSummary,
    render_session_notice,
    render_switch_summary,
)

TUTOR = str(uuid.uuid4())


def migrated(kind: str = "switch") -> events.Event:
    return events.new_event(
        "session.migrated",
        {
            "switch_id": str(uuid.uuid4()),
            "tutor_id": TUTOR,
            "session_id": "s-1",
            "student_id": "st-1",
            "scheduled_start_at": "2031-01-10T15:00:00Z",
            "kind": kind,
            "provider": "google_meet",
            "meeting_external_id": "m",
            "join_url": "https://meet.google.com/abc",
            "migrated_at": "2031-01-01T00:00:00Z",
        },
        tutor_id=TUTOR,
        source="/t",
    )


def test_the_same_change_under_another_event_id_is_the_same_email() -> None:
    event = migrated()
    twin = events.new_event(event.type, event.data, tutor_id=TUTOR, source="/t")
    assert twin.id != event.id
    assert domain.session_change(twin) == domain.session_change(event)
    rollback = events.new_event(
        event.type, {**event.data, "kind": "rollback"}, tutor_id=TUTOR, source="/t"
    )
    assert domain.session_change(rollback) != domain.session_change(event)


def test_failed_sessions_are_not_student_emails() -> None:
    failed = events.new_event(
        "session.failed",
        {
            "switch_id": str(uuid.uuid4()),
            "tutor_id": TUTOR,
            "session_id": "s",
            "student_id": "x",
            "scheduled_start_at": "2031-01-10T15:00:00Z",
            "kind": "switch",
            "provider": "zoom",
            "reason": "quota_exceeded",
            "retryable": True,
            "attempts": 1,
            "failed_at": "2031-01-01T00:00:00Z",
        },
        tutor_id=TUTOR,
        source="/t",
    )
    assert domain.session_change(failed) is None
    assert domain.audit_facts(failed.type, failed.data).outcome == "failed: quota_exceeded"


def test_message_id_is_deterministic_per_recipient() -> None:
    change = uuid.uuid4()
    a = domain.message_id(change, "A@x.test", domain="relink.test")
    assert a == domain.message_id(change, "a@x.test", domain="relink.test")
    assert a != domain.message_id(change, "b@x.test", domain="relink.test")
    assert a.startswith(f"<{change}.") and a.endswith("@relink.test>")


def test_times_read_in_the_students_zone() -> None:
    moment = datetime(2031, 1, 10, 15, 0, tzinfo=UTC)
    assert domain.local_time(moment, "Europe/Berlin") == (
        "Friday 10 January 2031, 16:00 CET (Europe/Berlin)"
    )
    assert "10:00 EST" in domain.local_time(moment, "America/New_York")
    assert domain.local_time(moment, "Not/AZone").endswith("15:00 UTC (UTC)")


def test_student_email_names_both_providers_and_escapes_html() -> None:
    rendered = render_session_notice(
        SessionNotice(
            kind=domain.NoticeKind.SESSION_MOVED,
            student_name="<Bob>",
            student_timezone="Asia/Tokyo",
            tutor_name="Ada",
            topic="Maths & more",
            starts_at=datetime(2031, 1, 10, 15, 0, tzinfo=UTC),
            duration_minutes=45,
            from_provider="zoom",
            to_provider="google_meet",
            join_url="https://meet.google.com/abc",
        )
    )
    assert "moved from Zoom to Google Meet" in rendered.text
    assert "Saturday 11 January 2031, 00:00 JST" in rendered.text
    assert "&lt;Bob&gt;" in rendered.html and "<Bob>" not in rendered.html
    assert "Maths &amp; more" in rendered.html
    assert "Google Meet" in rendered.subject


def test_summary_counts_sessions_needing_attention() -> None:
    rendered = render_switch_summary(
        SwitchSummary(
            tutor_name="Ada",
            from_provider="zoom",
            to_provider="google_meet",
            total=5,
            migrated=4,
            failed=1,
            setup_url="https://x.test/setup",
        )
    )
    assert rendered.subject.endswith("4 of 5 sessions moved, 1 need attention")
    assert "https://x.test/setup" in rendered.text


def test_audit_row_keeps_who_what_and_where() -> None:
    event = migrated("rollback")
    row = domain.audit_row(
        event_id=event.id,
        source=event.source,
        event_type=event.type,
        time=event.time,
        subject=event.subject,
        data=event.data,
        topic="t",
        partition=1,
        offset=7,
    )
    assert row["tutor_id"] == uuid.UUID(TUTOR)
    assert row["session_id"] is None  # "s-1" is not a UUID
    assert row["outcome"] == "restored" and row["to_provider"] == "google_meet"
    assert domain.audit_differences(row, {**row, "outcome": "x"}) == [("outcome", "restored", "x")]


def _settled(state: str = "COMPLETED", **counts: int) -> dict[str, object]:
    return {
        "switch_id": str(uuid.uuid4()),
        "tutor_id": TUTOR,
        "state": state,
        "from_provider": "zoom",
        "to_provider": "google_meet",
        "sessions_total": counts.get("total", 3),
        "sessions_migrated": counts.get("migrated", 3),
        "sessions_failed": counts.get("failed", 0),
        "sessions_skipped": 0,
        "settled_at": "2031-01-10T15:00:00Z",
    }


def _row(state: str = "COMPLETED", **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "tutor_id": uuid.UUID(TUTOR),
        "from_provider": "zoom",
        "to_provider": "google_meet",
        "state": state,
        "sessions_total": 3,
        "sessions_migrated": 3,
        "sessions_failed": 0,
    }
    return {**row, **changes}


def test_a_settled_switch_is_trusted_only_as_the_database_can_have_it() -> None:
    assert domain.verify_settled(_settled(), tutor_id=TUTOR, switch=_row()).refused is None
    # the switch moved on since (a retry reopened it, a rollback): still a true event
    for now in ("MIGRATING", "ROLLING_BACK", "ROLLED_BACK"):
        assert domain.verify_settled(_settled(), tutor_id=TUTOR, switch=_row(now)).refused is None
    refusals = [
        domain.verify_settled(_settled(), tutor_id=TUTOR, switch=None),
        domain.verify_settled(_settled(), tutor_id=str(uuid.uuid4()), switch=_row()),
        domain.verify_settled(_settled(), tutor_id=TUTOR, switch=_row(to_provider="zoom")),
        domain.verify_settled(_settled(), tutor_id=TUTOR, switch=_row("PLANNING")),
        domain.verify_settled(_settled("SUPERSEDED"), tutor_id=TUTOR, switch=_row("COMPLETED")),
    ]
    assert all(v.refused for v in refusals), refusals


def test_the_summary_is_owed_only_for_a_completed_switch_the_row_still_agrees_with() -> None:
    assert domain.summary_is_due(_settled(), switch=_row())
    failed = _settled("COMPLETED_WITH_FAILURES", migrated=2, failed=1)
    assert domain.summary_is_due(
        failed, switch=_row("COMPLETED_WITH_FAILURES", sessions_migrated=2, sessions_failed=1)
    )
    assert not domain.summary_is_due(_settled("SUPERSEDED", migrated=0), switch=_row("SUPERSEDED"))
    assert not domain.summary_is_due(_settled("ROLLED_BACK"), switch=_row("ROLLED_BACK"))
    assert not domain.summary_is_due(_settled(), switch=_row("MIGRATING"))  # reopened
    assert not domain.summary_is_due(_settled(), switch=_row(sessions_total=4))
