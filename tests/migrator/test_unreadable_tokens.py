"""A connection whose stored tokens this process cannot decrypt ends as a clear failure.

Built through SQL, as an operator's mistake would leave it: a ciphertext
copied from another tutor's row (it is bound to that row, so it does not
decrypt under the right key), and one sealed with a key id the migrator is
not configured with (a migrator deployed without the new key during a key
rotation). Either way: no call to the provider, no daily budget spent, the
rows settle within the attempt limit and the switch settles.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from services.core.db.models import MigrationState, SwitchState
from services.core.settings import CommonSettings
from services.core.tokens import TokenCipher, generate_key
from tests.migrator.conftest import migration_rows, read_topic, session_rows, settled, wait_for
from tests.migrator.factory import Factory, Tutor
from tests.migrator.processes import assigned_partitions

MAX_ATTEMPTS = 3  # RELINK_MIGRATOR_MAX_ATTEMPTS in the tests' migrator_env
MISSING_KEY_ID = "rotated-2026"


async def tokens_of_another_tutor(engine: Engine, factory: Factory, tutor: Tutor) -> None:
    """The tutor's connection gets another tutor's (valid, Zoom) ciphertexts."""
    other = await factory.tutor(provider="zoom")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tutor_video_provider_connections c SET "
                "access_token_encrypted = o.access_token_encrypted, "
                "refresh_token_encrypted = o.refresh_token_encrypted "
                "FROM tutor_video_provider_connections o WHERE c.tutor_id = :t AND o.tutor_id = :o"
            ),
            {"t": tutor.id, "o": other.id},
        )


async def tokens_under_a_missing_key(engine: Engine, factory: Factory, tutor: Tutor) -> None:
    """The tutor's own Zoom tokens, bound to the right row, sealed with a key we lack."""
    cipher = TokenCipher.from_spec(generate_key(MISSING_KEY_ID))
    tokens = tutor.tokens["zoom"]
    sealed = cipher.seal_tokens(tokens.access_token, tokens.refresh_token, tutor_id=tutor.id)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tutor_video_provider_connections SET access_token_encrypted = :a, "
                "refresh_token_encrypted = :r WHERE tutor_id = :t"
            ),
            {"a": sealed.access, "r": sealed.refresh, "t": tutor.id},
        )


@pytest.mark.parametrize(
    ("spoil", "reason", "named"),
    [
        (tokens_of_another_tutor, "reconnect_required", "reconnect"),
        (tokens_under_a_missing_key, "configuration_error", MISSING_KEY_ID),
    ],
    ids=["another-rows-ciphertext", "missing-key-id"],
)
async def test_tokens_that_do_not_decrypt_fail_the_switch_without_provider_calls(
    engine: Engine,
    settings: CommonSettings,
    factory: Factory,
    sim_admin: Any,
    relay: Any,
    start_migrator: Any,
    spoil: Any,
    reason: str,
    named: str,
) -> None:
    tutor = await factory.tutor(provider="google_meet")
    sessions = factory.sessions(tutor, count=3, provider="google_meet")
    switch_id = factory.switch(tutor, to_provider="zoom", publish=False)
    # The migrator is running before the bad ciphertext appears: one present at its
    # start makes it refuse to start instead (tests/integration/test_token_keys.py).
    migrator = start_migrator()
    wait_for(
        lambda: assigned_partitions(migrator.output(), settings.topic_provider_switched),
        what="the migrator running (past its start-up checks)",
    )
    await spoil(engine, factory, tutor)
    factory.publish(switch_id)

    switch = wait_for(lambda: settled(engine, switch_id), what="switch settles")
    assert (switch.state, switch.sessions_failed) == (
        SwitchState.COMPLETED_WITH_FAILURES.value,
        3,
    )
    assert all(r.provider == "google_meet" for r in session_rows(engine, sessions))
    rows = migration_rows(engine, switch_id)
    assert [r.state for r in rows] == [MigrationState.FAILED.value] * 3
    assert all(r.attempts <= MAX_ATTEMPTS for r in rows)
    assert all(r.last_error.startswith(f"{reason}: ") for r in rows)

    failed = [
        m
        for m in read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_session_failed,
            until=lambda got: sum(m.event.data["switch_id"] == str(switch_id) for m in got) >= 3,
        )
        if m.event.data["switch_id"] == str(switch_id)
    ]
    assert {m.event.data["reason"] for m in failed} == {reason}
    assert all(named in m.event.data["detail"] for m in failed)
    assert all(m.event.data["retryable"] for m in failed)

    # Nothing reached the provider, and no create was counted against the day.
    account = await sim_admin.account("zoom", tutor.email)
    assert (account["api_calls"], account["create_calls"]) == (0, 0)
    with engine.connect() as conn:
        spent = conn.execute(
            text("SELECT coalesce(sum(used), 0) FROM provider_quota_usage WHERE tutor_id = :t"),
            {"t": tutor.id},
        ).scalar_one()
    assert spent == 0
    assert "migration crashed" not in migrator.output()
    # The operator reads which key to deploy in the migrator's log.
    assert named in migrator.output()
