"""The platform's backend reads its tutors' switches over the service API (`switches:read`):
the history, one switch, and its progress as server-sent events through a real HTTP server.

The API key comes from the real `relink keys api create`, the tutor is the platform's own
(upserted through the API) and switches in their browser against the simulator; the
migrator's progress is written as the page tests write it (`set_progress`).
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import Engine

from services.oauth_gateway.adapters.web.auth import issue_token
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import Person, connect, switch_id_of
from tests.gateway.test_pages_and_access import set_progress
from tests.gateway.test_platform_api import bearer, new_key
from tests.gateway.test_progress_stream import events, server

__all__ = ["server"]


async def test_switches_read_over_the_service_api_with_their_progress_stream(
    http: httpx.AsyncClient,
    server: str,
    relink_env: dict[str, str],
    engine: Engine,
    gateway_settings: GatewaySettings,
) -> None:
    reader = new_key(relink_env, "users:write", "switches:read")
    unscoped = new_key(relink_env, "users:write", "users:read", "sessions:read")
    run = uuid.uuid4().hex[:8]
    tutor_ext, student_ext = f"t-{run}", f"s-{run}"
    email = f"tutor-{run}@example.com"
    made = await http.put(
        f"/platform/v1/users/{tutor_ext}",
        json={"role": "tutor", "name": "Ada", "email": email},
        headers=bearer(reader),
    )
    assert made.status_code == 201, made.text
    assert (
        await http.put(
            f"/platform/v1/users/{student_ext}",
            json={"role": "student", "name": "Bo", "email": f"student-{run}@example.com"},
            headers=bearer(reader),
        )
    ).status_code == 201
    tutor_id = uuid.UUID(made.json()["relink_id"])
    token = issue_token(
        tutor_id,
        role="tutor",
        secret=gateway_settings.session_secret.get_secret_value(),
        ttl_s=3600,
    )
    tutor = Person(tutor_id, email, "tutor", token)

    none_yet = await http.get(f"/platform/v1/tutors/{tutor_ext}/switches", headers=bearer(reader))
    assert (none_yet.status_code, none_yet.json()) == (200, [])
    await connect(http, tutor, "zoom")
    switch_id = switch_id_of(await connect(http, tutor, "google_meet"))
    assert switch_id is not None

    history = await http.get(f"/platform/v1/tutors/{tutor_ext}/switches", headers=bearer(reader))
    assert history.status_code == 200, history.text
    (listed,) = history.json()
    assert listed["id"] == str(switch_id)
    assert (listed["from_provider"], listed["to_provider"], listed["state"]) == (
        "zoom",
        "google_meet",
        "PENDING",
    )
    one = await http.get(f"/platform/v1/switches/{switch_id}", headers=bearer(reader))
    assert one.status_code == 200 and one.json()["id"] == str(switch_id)
    # the tutor's own view of it is the same switch
    own = await http.get(f"/api/switches/{switch_id}", headers=tutor.headers)
    assert own.json()["state"] == one.json()["state"]

    # Refused: no key (401), a key without the scope (403), unknown ids (404), bad ids (422).
    refusals = {
        f"/platform/v1/tutors/{tutor_ext}/switches": (401, 403),
        f"/platform/v1/switches/{switch_id}": (401, 403),
        f"/platform/v1/switches/{switch_id}/events": (401, 403),
    }
    for path, (anonymous, unscoped_status) in refusals.items():
        nobody = await http.get(path)
        assert nobody.status_code == anonymous and nobody.json()["error"] == "NotSignedIn"
        scoped = await http.get(path, headers=bearer(unscoped))
        assert scoped.status_code == unscoped_status and scoped.json()["error"] == "Forbidden"
    for path in (
        f"/platform/v1/switches/{uuid.uuid4()}",
        f"/platform/v1/switches/{uuid.uuid4()}/events",
        f"/platform/v1/tutors/nobody-{run}/switches",
        f"/platform/v1/tutors/{student_ext}/switches",  # a student has no switches
    ):
        missing = await http.get(path, headers=bearer(reader))
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json()["error"] == "NotFound"
    bad = await http.get("/platform/v1/switches/not-a-uuid", headers=bearer(reader))
    assert bad.status_code == 422

    # The progress stream, as the platform's UI hears it: each change once, then settled.
    url = f"/platform/v1/switches/{switch_id}/events"
    heard = []
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        async with client.stream("GET", url, headers=bearer(reader)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            heard.append(await anext(stream))
            assert (heard[0].event, heard[0].data["state"]) == ("progress", "PENDING")
            set_progress(engine, switch_id, state="MIGRATING", sessions_total=2)
            while heard[-1].data["state"] != "MIGRATING":
                heard.append(await anext(stream))
            set_progress(engine, switch_id, state="COMPLETED", sessions_migrated=2)
            heard.extend([e async for e in stream])  # ends by itself after `settled`
        assert heard[-1].event == "settled"
        assert (heard[-1].data["state"], heard[-1].data["sessions_migrated"]) == ("COMPLETED", 2)
        assert len({e.id for e in heard}) == len(heard)
        middle = next(e for e in heard if e.data["state"] == "MIGRATING")
        async with client.stream(
            "GET", url, headers={**bearer(reader), "Last-Event-ID": str(middle.id)}
        ) as again:
            resumed = [e async for e in events(again)]
        assert [(e.event, e.id) for e in resumed] == [("settled", heard[-1].id)]
