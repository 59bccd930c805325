"""A switch overtaken by a newer one ends SUPERSEDED everywhere (issue 17, defect 2).

Real parts: the relay, Kafka, `relink migrator`, the simulator over HTTP, the
notifier sending to an SMTP sink, and the gateway's own store for the history
its `/api/switches` serves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from devtools.smtp_sink.sink import SmtpSink
from services.core.db.models import SwitchState
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db import GatewayStore
from tests.migrator.conftest import migration_rows, settled, switch_row, wait_for
from tests.migrator.factory import Factory
from tests.migrator.test_rollback import outbox_events


async def test_a_switch_overtaken_while_its_meetings_are_made_ends_superseded(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    tutor_mail: SmtpSink,
    start_migrator: Any,
) -> None:
    """Zoom → Meet, and Meet → Zoom committed while the Meet meetings are being made.

    The migrator sees the newer connection (its rows are skipped, nothing
    moves) before it hears of the newer switch: the first switch used to end
    `COMPLETED 0/0`, and its tutor got "0 of 0 sessions moved … your students
    have been emailed their new links".
    """
    tutor = await factory.tutor(provider="zoom")
    sessions = factory.sessions(tutor, count=3, provider="zoom")
    await factory.real_meetings(tutor, sessions, provider="zoom")
    # Slow Meet: the first switch's meetings are still being made when the tutor switches back.
    await sim_admin.faults("google_meet", tutor.email, latency_ms=3000)
    start_migrator()
    to_meet = factory.switch(tutor, to_provider="google_meet")
    wait_for(
        lambda: migration_rows(engine, to_meet), what="the first switch is planned", every=0.05
    )
    back_to_zoom = factory.switch(tutor, to_provider="zoom", publish=False)

    first = wait_for(lambda: settled(engine, to_meet), what="the first switch settles")
    assert first.state == SwitchState.SUPERSEDED.value
    assert first.sessions_migrated == 0

    factory.publish(back_to_zoom)
    second = wait_for(lambda: settled(engine, back_to_zoom), what="the second switch settles")
    assert second.state == SwitchState.COMPLETED.value
    assert switch_row(engine, to_meet).state == SwitchState.SUPERSEDED.value
    # Each settlement committed its switch.settled, saying what really happened.
    (overtaken,) = outbox_events(engine, "switch.settled", to_meet)
    assert (overtaken["state"], overtaken["sessions_migrated"]) == ("SUPERSEDED", 0)
    (ended,) = outbox_events(engine, "switch.settled", back_to_zoom)
    assert ended["state"] == SwitchState.COMPLETED.value

    # The history the gateway's /api/switches serves says so too.
    store = GatewayStore(sessionmaker(engine), cipher=settings.token_cipher(), topics=settings)
    history = {v.id: v for v in store.switches(tutor.id, now=datetime.now(UTC))}
    assert history[to_meet].state == SwitchState.SUPERSEDED.value
    assert not history[to_meet].can_roll_back

    # The tutor is emailed about the switch she ended on, and no mail claims a move.
    wait_for(
        lambda: any("Zoom" in m.subject for m in tutor_mail.mails()),
        what="the summary of the switch back to Zoom",
    )
    mails = tutor_mail.mails()
    assert {m.rcpt_to for m in mails} == {(tutor.email,)}  # nothing moved: no student emailed
    assert not [m.subject for m in mails if "Google Meet" in m.subject]
    for mail in mails:
        assert "sessions moved" not in mail.subject, mail.subject
        assert "have been emailed" not in mail.body(), mail.body()
