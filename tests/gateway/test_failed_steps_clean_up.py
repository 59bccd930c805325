"""A step that fails after a provider call leaves nothing behind at the provider (issue 18).

- A booking whose database step fails deletes the meeting it made.
- An OAuth callback that fails after the code exchange revokes the tokens it
  was given, unless they may be the live connection's own grant (Google keeps
  one grant per account and app; revoking it would disconnect the tutor).

The database step is made to fail for real: a PostgreSQL trigger refuses the
row for this test's tutor (each test has its own database).
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import Engine, text

from devtools.provider_sim.server import SimHandle
from tests.gateway.conftest import People, callback, connect, start
from tests.gateway.test_bookings_and_keys import booking, live_meetings, sim_account
from tests.gateway.test_granted_scopes import CALENDAR, consent_granting


def refuse_inserts(engine: Engine, table: str, tutor_id: uuid.UUID) -> None:
    """From now on PostgreSQL refuses this tutor's new rows in `table`."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_for_test() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'refused for the test'; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW WHEN (NEW.tutor_id = '{tutor_id}') "
                "EXECUTE FUNCTION refuse_for_test()"
            )
        )


async def test_a_booking_whose_database_step_fails_deletes_its_meeting(
    http: httpx.AsyncClient, people: People, engine: Engine, sim: SimHandle
) -> None:
    tutor, student = people("tutor"), people("student")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    refuse_inserts(engine, "bookings", tutor.id)

    answer = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)

    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].endswith("nothing was changed. Please try again.")
    account = await sim_account(sim, "zoom", tutor.email)
    assert account["create_calls"] == 1  # the meeting was made ...
    assert live_meetings(account) == []  # ... and deleted again


async def test_a_callback_whose_database_step_fails_revokes_its_new_tokens(
    http: httpx.AsyncClient, people: People, engine: Engine, sim: SimHandle
) -> None:
    tutor = people("tutor")
    refuse_inserts(engine, "tutor_video_provider_connections", tutor.id)

    answer = await connect(http, tutor, "google_meet")

    assert answer.status_code == 503, answer.text
    grants = (await sim_account(sim, "google_meet", tutor.email))["grants"]
    assert grants == {"live": 0, "revoked": 1}


async def test_a_first_connection_without_a_needed_scope_revokes_what_it_got(
    http: httpx.AsyncClient, people: People, sim: SimHandle
) -> None:
    tutor = people("tutor")
    back = await consent_granting(
        await start(http, tutor, "zoom"), email=tutor.email, drop="meeting:write:meeting"
    )
    assert (await callback(http, tutor, back)).status_code == 400
    grants = (await sim_account(sim, "zoom", tutor.email))["grants"]
    assert grants == {"live": 0, "revoked": 1}


async def test_a_failed_consent_on_the_live_google_account_keeps_the_connection(
    http: httpx.AsyncClient, people: People, sim: SimHandle
) -> None:
    """Revoking here would revoke the live connection too (one Google grant per account)."""
    tutor, student = people("tutor"), people("student")
    assert (await connect(http, tutor, "google_meet")).status_code == 303
    back = await consent_granting(
        await start(http, tutor, "google_meet"), email=tutor.email, drop=CALENDAR
    )
    assert (await callback(http, tutor, back)).status_code == 400

    assert (await sim_account(sim, "google_meet", tutor.email))["grants"]["revoked"] == 0
    made = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)
    assert made.status_code == 201, made.text
    assert made.json()["provider"] == "google_meet"


async def test_a_failed_consent_at_another_provider_revokes_only_the_new_tokens(
    http: httpx.AsyncClient, people: People, sim: SimHandle
) -> None:
    tutor = people("tutor")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    back = await consent_granting(
        await start(http, tutor, "google_meet"), email=tutor.email, drop=CALENDAR
    )
    assert (await callback(http, tutor, back)).status_code == 400

    assert (await sim_account(sim, "google_meet", tutor.email))["grants"] == {
        "live": 0,
        "revoked": 1,
    }
    assert (await sim_account(sim, "zoom", tutor.email))["grants"]["live"] == 1


async def test_a_connection_that_does_not_decrypt_asks_to_reconnect(
    http: httpx.AsyncClient, people: People, engine: Engine, sim: SimHandle
) -> None:
    """Not a 500: a 409 in the error shape, no meeting made; connecting again fixes it."""
    tutor, student = people("tutor"), people("student")
    assert (await connect(http, tutor, "zoom")).status_code == 303
    with engine.begin() as conn:  # ciphertexts swapped: each is bound to its own column
        conn.execute(
            text(
                "UPDATE tutor_video_provider_connections SET "
                "access_token_encrypted = refresh_token_encrypted, "
                "refresh_token_encrypted = access_token_encrypted WHERE tutor_id = :t"
            ),
            {"t": tutor.id},
        )

    refused = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "reconnect_required"
    assert (await sim_account(sim, "zoom", tutor.email))["create_calls"] == 0
    assert (await connect(http, tutor, "zoom")).status_code == 303
    made = await http.post("/api/bookings", json=booking(student.id), headers=tutor.headers)
    assert made.status_code == 201, made.text
