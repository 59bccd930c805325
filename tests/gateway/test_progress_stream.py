"""A switch's progress as server-sent events, through a real HTTP server (uvicorn).

The platform's UI (or relink's page) opens `GET /api/switches/{id}/events`
and hears each change once, then `settled`, then the stream ends; a client
that reconnects with `Last-Event-ID` hears only what came after.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from services.oauth_gateway.entrypoint import create_app
from services.oauth_gateway.usecases.tutors import Gateway
from tests.gateway.conftest import People, Person
from tests.gateway.test_pages_and_access import set_progress


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server(gateway: Gateway) -> AsyncIterator[str]:
    """The gateway app served by uvicorn on a free port (streams need a real server)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(gateway=gateway), host="127.0.0.1", port=port, log_level="warning"
    )
    serving = uvicorn.Server(config)
    task = asyncio.create_task(serving.serve())
    for _ in range(200):
        if serving.started:
            break
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    serving.should_exit = True
    await task


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of an SSE response, as they arrive (comment lines skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Event(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_the_stream_tells_each_change_once_then_settles_and_ends(
    server: str, switched: tuple[Person, uuid.UUID], engine: Engine, people: People
) -> None:
    tutor, switch_id = switched
    url = f"/api/switches/{switch_id}/events"
    heard: list[Event] = []
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        async with client.stream("GET", url, headers=tutor.headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            heard.append(await anext(stream))
            # the migrator has not handled the request yet: what the tutor asked for
            assert (heard[0].event, heard[0].data["state"]) == ("progress", "PENDING")
            set_progress(engine, switch_id, state="MIGRATING", sessions_total=3)
            set_progress(engine, switch_id, sessions_migrated=1)
            while heard[-1].data["sessions_migrated"] < 1:
                heard.append(await anext(stream))
            set_progress(engine, switch_id, state="COMPLETED", sessions_migrated=3)
            heard.extend([e async for e in stream])  # ends by itself after `settled`
        ids = [e.id for e in heard]
        assert len(set(ids)) == len(ids), "an event told twice"
        assert [e.event for e in heard][-1] == "settled"
        assert [e.event for e in heard[:-1]] == ["progress"] * (len(heard) - 1)
        last = heard[-1].data
        assert (last["state"], last["sessions_migrated"], last["sessions_remaining"]) == (
            "COMPLETED",
            3,
            0,
        )
        assert last["id"] == str(switch_id) and "failed_sessions" not in last

        # Reconnecting after the MIGRATING event: only the final state comes.
        middle = next(e for e in heard if e.data["state"] == "MIGRATING")
        async with client.stream(
            "GET", url, headers={**tutor.headers, "Last-Event-ID": str(middle.id)}
        ) as again:
            resumed = [e async for e in events(again)]
        assert [(e.event, e.id) for e in resumed] == [("settled", heard[-1].id)]

        # Someone else's switch, or nobody signed in: refused before any stream.
        other = people("tutor")
        assert (await client.get(url, headers=other.headers)).status_code == 404
        assert (await client.get(url)).status_code == 401
