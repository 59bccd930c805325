"""A connection whose tokens the gateway forgot (the tutor removed relink's app at Zoom)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from services.core.settings import CommonSettings
from tests.migrator.conftest import read_topic, session_rows, settled, wait_for
from tests.migrator.factory import Factory


async def test_forgotten_tokens_fail_the_switch_as_reconnect_required_without_calls(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=3, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom")
    # What the gateway does on Zoom's app_deauthorized: tokens erased, row kept.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tutor_video_provider_connections SET access_token_encrypted = NULL,"
                " refresh_token_encrypted = NULL, token_expires_at = NULL,"
                " disconnected_at = now(), disconnect_reason = 'app_deauthorized'"
                " WHERE tutor_id = :t"
            ),
            {"t": tutor.id},
        )
    start_migrator()
    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_failed) == ("COMPLETED_WITH_FAILURES", 3)
    assert all(r.provider == "google_meet" for r in session_rows(engine, sessions))
    failed = read_topic(
        settings.kafka_bootstrap_servers, settings.topic_session_failed, until=lambda g: len(g) >= 3
    )
    assert {m.event.data["reason"] for m in failed} == {"reconnect_required"}
    account = await sim_admin.account("zoom", tutor.email)
    assert account["create_calls"] == 0
