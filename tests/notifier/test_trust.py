"""The notifier trusts no event the database does not back (issue #18).

Forged records produced straight to the topics (the devstack broker has no
authentication) must not email anyone a link of their choosing, nor enter the
audit trail: links and recipients come from the database, and what it does
not back goes to the dead-letter topic with reason `unverified`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    SOURCE,
    make_world,
    migrated_event,
    produce,
    rows,
    running_notifier,
    wait_for,
)
from tests.notifier.test_audit import read_all


def _forged(world_event: events.Event, **changes: object) -> events.Event:
    data = {**world_event.data, **changes}
    return events.new_event(
        world_event.type, data, tutor_id=world_event.tutor_id, source="/evil/producer"
    )


def test_forged_session_events_email_nobody_a_link_of_their_choosing(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1, 1], switch_state="MIGRATING")
    real_a, real_b = world.sessions
    honest = migrated_event(world, real_a)
    # 1. a real session, but a meeting the migrator never made, and a script "link"
    invented = _forged(
        migrated_event(world, real_b),
        meeting_external_id="evil-meeting",
        join_url="https://evil.example/phish",
    )
    # 2. the real meeting id, but another link: the email must carry the recorded one
    relinked = _forged(honest, join_url="https://evil.example/phish")
    # 3. a switch that does not exist
    ghost = events.new_event(
        "provider.switched",
        {
            "switch_id": str(uuid.uuid4()),
            "tutor_id": str(world.tutor_id),
            "from_provider": "zoom",
            "to_provider": "google_meet",
            "generation": 9,
            "switched_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source="/evil/producer",
    )
    # 4. a real session and meeting, claimed for another tutor
    stranger = str(uuid.uuid4())
    other_tutor = events.new_event(
        "session.migrated",
        {**honest.data, "tutor_id": stranger},
        tutor_id=stranger,
        source=SOURCE,
    )
    produce(settings, [invented, relinked, ghost, other_tutor])

    with running_notifier(notifier_settings):
        wait_for(lambda: len(smtp_sink.mails()) >= 1, what="the backed event's email")
        letters = read_all(settings, settings.topic_dead_letter, expect=3)

    mails = smtp_sink.mails()
    assert all("evil.example" not in m.body("plain") + m.body("html") for m in mails)
    students = [m for m in mails if m.rcpt_to != (world.tutor_email,)]
    assert len(students) == 1  # only the event whose meeting the database records
    (mail,) = students
    assert mail.rcpt_to == (real_a["student"].email,)
    body = mail.body("plain") + mail.body("html")
    assert real_a["join_url"] in body
    assert "evil.example" not in body
    reasons = sorted(
        dict(letter.headers())[events.DLQ_REASON]  # type: ignore[attr-defined]
        for letter in letters
    )
    assert reasons == [b"unverified"] * 3
    audited = rows(engine, "SELECT event_id FROM audit_log ORDER BY event_id")
    assert [str(r[0]) for r in audited] == [relinked.id]
