"""The notifier says what it sends: one log line per email, ids only, with the outcome."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import Engine

from devtools.smtp_sink.sink import SmtpSink
from services.core.settings import CommonSettings
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    make_world,
    migrated_event,
    produce,
    rows,
    running_notifier,
    settled_event,
    switched_event,
    wait_for,
)

LINE = re.compile(r"^email (\d+) \(([a-z_]+), attempt 1\) (sent|refused for good: .*)( \S+=\S+)*$")


def test_one_line_per_email_with_ids_and_outcome_never_an_address_or_link(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world(engine, sessions_per_student=[2, 1])
    bounced = world.students[1]
    smtp_sink.faults.reject_recipients.add(bounced.email.lower())
    produce(
        settings,
        [
            switched_event(world),
            *(migrated_event(world, s) for s in world.sessions),
            settled_event(world),  # the tutor's summary waits for the switch to settle
        ],
    )

    with (
        caplog.at_level(logging.INFO, logger="services.notifier"),
        running_notifier(notifier_settings),
    ):
        wait_for(
            lambda: (
                rows(engine, "SELECT count(*) FROM notifications WHERE state <> 'PENDING'")[0][0]
                >= 4
            ),
            what="3 student emails and 1 summary settled",
        )

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("email ")]
    ids = {str(i) for (i,) in rows(engine, "SELECT id FROM notifications")}
    assert len(lines) == 4, lines
    outcomes = {}
    for line in lines:
        found = LINE.match(line)
        assert found, line
        outcomes[found[1]] = found[3].split(":")[0]
    assert set(outcomes) == ids
    assert sorted(outcomes.values()) == ["refused for good", "sent", "sent", "sent"]
    session_lines = [line for line in lines if "session_id=" in line]
    assert len(session_lines) == 3
    assert all(f"switch_id={world.switch_id}" in line for line in lines)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for email in [*(student.email for student in world.students), world.tutor_email]:
        assert email not in everything
    for session in world.sessions:
        assert session["join_url"] not in everything
