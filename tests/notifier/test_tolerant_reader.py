"""The notifier reads as a tolerant reader (issue 20).

An event type it does not know and a newer version of `session.migrated` on
its topics are skipped and counted, not dead-lettered; a `session.migrated` v1
carrying a property added later is recorded and emailed as the event it
knows. Only the unreadable record after them is dead-lettered.
"""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import Engine

from devtools.smtp_sink.sink import SmtpSink
from services.core import events
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    make_world,
    migrated_event,
    produce_raw,
    rows,
    running_notifier,
    wait_for,
)
from tests.notifier.test_audit import read_all


def _raw(settings: CommonSettings, event: events.Event) -> None:
    # straight from the dataclass: strict producers would refuse these events
    message = events.to_message(event)
    assert isinstance(message.key, bytes)
    produce_raw(
        settings,
        settings.topic_session_migrated,
        key=message.key,
        value=message.value,
        headers=list(message.headers.items()),
    )


def test_extra_fields_newer_versions_and_unknown_types_are_not_dead_lettered(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    world = make_world(engine, sessions_per_student=[1, 1], switch_state="MIGRATING")
    session_a, session_b = world.sessions
    known_a = migrated_event(world, session_a)
    # 1. an event type the notifier does not read
    _raw(
        settings,
        dataclasses.replace(known_a, id=str(uuid.uuid4()), type="session.renamed", data={}),
    )
    # 2. a v2 session.migrated (its dataschema names v2): skipped
    _raw(settings, dataclasses.replace(migrated_event(world, session_b), version=2))
    # 3. v1 with a property added later: read, recorded, emailed
    _raw(settings, dataclasses.replace(known_a, data={**known_a.data, "room": "B12"}))
    # 4. unreadable: the one dead letter
    produce_raw(
        settings,
        settings.topic_session_migrated,
        key=str(world.tutor_id).encode(),
        value=b"{oops",
        headers=[],
    )

    with running_notifier(notifier_settings) as loop:
        wait_for(
            lambda: any(m.rcpt_to != (world.tutor_email,) for m in smtp_sink.mails()),
            what="the v1 event's email",
        )
        letters = read_all(settings, settings.topic_dead_letter, expect=1)
        skipped = dict(loop.events.skipped.counts)

    assert [letter.value() for letter in letters] == [b"{oops"]  # type: ignore[attr-defined]
    assert skipped == {
        ("unknown_type", "session.renamed", None): 1,
        ("newer_version", "session.migrated", 2): 1,
    }
    students = [m for m in smtp_sink.mails() if m.rcpt_to != (world.tutor_email,)]
    assert [m.rcpt_to for m in students] == [(session_a["student"].email,)]
    audited = rows(engine, "SELECT event_id FROM audit_log")
    assert [str(r[0]) for r in audited] == [known_a.id]
