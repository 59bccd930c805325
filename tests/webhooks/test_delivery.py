"""`relink webhooks` delivers relink's events to a registered endpoint, signed the Standard
Webhooks way: a real receiver on loopback verifies every request with the `standardwebhooks`
library. Real Kafka, real PostgreSQL, the dispatcher as a real process, endpoints registered
with the real CLI.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine

from services.core import events
from services.core.db.models import WebhookDeliveryState
from services.core.settings import CommonSettings
from tests.notifier.conftest import (
    make_world,
    migrated_event,
    produce,
    settled_event,
    switched_event,
)
from tests.webhooks.conftest import (
    Receiver,
    register,
    relink,
    rows,
    start_dispatcher,
    stop,
    wait_for,
    webhooks_env,
)


def switch_events(engine: Engine, sessions: int = 2) -> list[events.Event]:
    world = make_world(engine, sessions_per_student=[1] * sessions)
    return [
        switched_event(world),
        *(migrated_event(world, s) for s in world.sessions),
        settled_event(world),
    ]


def msg(event: events.Event) -> str:
    return f"msg_{event.id}"


def assert_delivered(receiver: Receiver, batch: list[events.Event]) -> None:
    """Every event arrived, verified, with its type, time and data as produced."""
    got = receiver.verified()
    for event in batch:
        payload = got[msg(event)]
        assert payload["type"] == event.type
        assert payload["id"] == event.id
        assert payload["timestamp"] == events.rfc3339(event.time)
        assert payload["data"] == event.data


def all_delivered(receiver: Receiver, batch: list[events.Event]) -> bool:
    return {msg(e) for e in batch} <= set(receiver.verified())


def test_every_event_is_delivered_signed_and_retried_after_500s_and_timeouts(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(relink_env, RELINK_WEBHOOKS_TIMEOUT_S="1")
    endpoint = register(env, receiver, "--name", "platform")
    batch = switch_events(engine)
    refused, slow = msg(batch[1]), msg(batch[2])

    def plan(message_id: str, nth: int) -> tuple[int, float]:
        if message_id == refused and nth <= 2:
            return 500, 0.0  # twice a server error
        if message_id == slow and nth == 1:
            return 200, 3.0  # answered after the dispatcher's 1 s timeout
        return 200, 0.0

    receiver.plan = plan
    produce(settings, batch)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: all_delivered(receiver, batch), what="every event delivered")
    finally:
        stop(dispatcher)
    assert_delivered(receiver, batch)
    assert receiver.count(refused) == 3
    assert receiver.count(slow) >= 2
    # Every request verified (none was refused by the receiver's check).
    assert all(r.payload is not None for r in receiver.all())
    # The same webhook-id on every retry (the receiver's idempotency key).
    assert {r.message_id for r in receiver.all()} == {msg(e) for e in batch}

    states = rows(
        engine,
        "SELECT event_id, state, attempts, last_status_code FROM webhook_deliveries"
        " WHERE endpoint_id = :e",
        e=endpoint,
    )
    by_event = {r.event_id: r for r in states}
    assert {r.state for r in states} == {WebhookDeliveryState.DELIVERED}
    assert by_event[batch[1].id].attempts == 3
    assert by_event[batch[2].id].attempts >= 2
    assert by_event[batch[0].id].attempts == 1

    # The delivery log names each attempt's answer: the 500s and the timeout.
    log = relink(env, "webhooks", "log", "--endpoint", endpoint).stdout
    assert log.count("HTTP 500") == 2
    assert "Timeout" in log
    assert log.count("-> DELIVERED") == len(receiver.all())
    # The secret is never logged.
    assert receiver.secret not in (tmp_path / "webhooks.log").read_text()


def test_a_tampered_body_is_refused_by_the_receiver(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(relink_env)
    register(env, receiver)
    batch = switch_events(engine, sessions=1)
    produce(settings, batch)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: all_delivered(receiver, batch), what="every event delivered")
    finally:
        stop(dispatcher)
    original = next(r for r in receiver.all() if r.message_id == msg(batch[1]))
    forward = {k: v for k, v in original.headers.items() if k.startswith("webhook-")}
    # The request as relink sent it verifies (again) ...
    same = httpx.post(receiver.url, content=original.body, headers=forward, timeout=10)
    assert same.status_code == 200
    # ... one changed byte does not, nor a signature moved to another message.
    tampered = original.body.replace(b"google_meet", b"zoom_meet__")
    assert tampered != original.body
    answer = httpx.post(receiver.url, content=tampered, headers=forward, timeout=10)
    assert answer.status_code == 400
    moved = {**forward, "webhook-id": msg(batch[0])}
    assert (
        httpx.post(receiver.url, content=original.body, headers=moved, timeout=10).status_code
        == 400
    )


def test_no_delivery_is_lost_across_a_dispatcher_sigkill(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(relink_env, RELINK_WEBHOOKS_TIMEOUT_S="30")
    register(env, receiver)
    batch = switch_events(engine, sessions=3)
    # Each message's first request is slow: the dispatcher is killed while one is in flight.
    receiver.plan = lambda _id, nth: (200, 2.0 if nth == 1 else 0.0)
    produce(settings, batch)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: receiver.in_flight > 0, what="a delivery in flight")
        os.killpg(dispatcher.pid, signal.SIGKILL)
        dispatcher.wait(30)
        in_flight_at_kill = {r.message_id for r in receiver.all()}
        # More events while the dispatcher is down.
        later = switch_events(engine, sessions=1)
        produce(settings, later)
        dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
        wait_for(lambda: all_delivered(receiver, batch + later), what="every event delivered")
    finally:
        stop(dispatcher)
    assert_delivered(receiver, batch + later)
    # The one cut off by the kill was sent again after the restart, same webhook-id.
    wait_for(lambda: receiver.in_flight == 0, what="the cut-off request to end")
    cut_off = {r.message_id for r in receiver.all()} - in_flight_at_kill
    assert any(receiver.count(m) >= 2 for m in cut_off | in_flight_at_kill)
    states = rows(engine, "SELECT state FROM webhook_deliveries")
    assert len(states) == len(batch + later)
    assert {r.state for r in states} == {WebhookDeliveryState.DELIVERED}


def test_an_endpoint_failing_long_enough_is_disabled_and_a_replay_redelivers(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(
        relink_env,
        RELINK_WEBHOOKS_DISABLE_AFTER_FAILURES="3",
        RELINK_WEBHOOKS_DISABLE_AFTER_S="0",
    )
    endpoint = register(
        env, receiver, "--event-type", "provider.switched", "--event-type", "switch.settled"
    )
    receiver.plan = lambda _id, _n: (503, 0.0)
    since = datetime.now(UTC) - timedelta(seconds=5)
    first = switch_events(engine, sessions=1)
    produce(settings, first)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:

        def disabled() -> bool:
            found = rows(
                engine, "SELECT disabled_at FROM webhook_endpoints WHERE id = :e", e=endpoint
            )
            return found[0].disabled_at is not None

        wait_for(disabled, what="the endpoint disabled")
        # Events after the disabling are recorded, not sent.
        second = switch_events(engine, sessions=1)
        produce(settings, second)
        wait_for(
            lambda: len(rows(engine, "SELECT 1 FROM webhook_deliveries")) == 4,
            what="the later events recorded",
        )
        time.sleep(1.0)  # a dispatcher still sending to it would have by now
        assert len(receiver.all()) == 3
        listed = relink(env, "webhooks", "endpoints", "list").stdout
        assert endpoint in listed and "disabled" in listed and "3 attempts in a row" in listed
        assert {r.state for r in rows(engine, "SELECT state FROM webhook_deliveries")} == {
            WebhookDeliveryState.SKIPPED
        }

        # A replay of a disabled endpoint is refused and changes nothing.
        refused = relink(
            env,
            "webhooks",
            "replay",
            "--since",
            since.isoformat(),
            "--endpoint",
            endpoint,
            check=False,
        )
        assert refused.returncode == 2 and "enable it first" in refused.stderr
        # The platform fixed its receiver: enable, replay, everything arrives.
        receiver.plan = lambda _id, _n: (200, 0.0)
        relink(env, "webhooks", "endpoints", "enable", endpoint)
        replayed = relink(
            env, "webhooks", "replay", "--since", since.isoformat(), "--endpoint", endpoint
        )
        assert "4 deliveries queued again" in replayed.stdout
        wanted = [e for e in first + second if e.type in ("provider.switched", "switch.settled")]
        assert len(wanted) == 4
        wait_for(lambda: all_delivered(receiver, wanted), what="the replayed events")
        assert_delivered(receiver, wanted)
        # Only the types it asked for.
        assert {r.message_id for r in receiver.all()} == {msg(e) for e in wanted}
        # A replay re-delivers what was delivered already.
        delivered_once = len(receiver.verified())
        relink(env, "webhooks", "replay", "--since", since.isoformat())
        wait_for(
            lambda: all(receiver.count(msg(e)) >= 2 for e in wanted[2:]),
            what="the second replay",
        )
        assert delivered_once == 4
    finally:
        stop(dispatcher)


def test_a_new_endpoint_is_not_sent_the_events_from_before_it_was_registered(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(relink_env)
    world = make_world(engine, sessions_per_student=[1])
    before = switched_event(world)
    produce(settings, [before])
    register(env, receiver)
    # the same tutor: the same partition, read before what follows
    after = [migrated_event(world, world.sessions[0]), settled_event(world)]
    produce(settings, after)
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: all_delivered(receiver, after), what="the later events delivered")
    finally:
        stop(dispatcher)
    assert {r.message_id for r in receiver.all()} == {msg(e) for e in after}
    assert rows(engine, "SELECT 1 FROM webhook_deliveries WHERE event_id = :e", e=before.id) == []
    # it was read (tracked) all the same
    assert rows(engine, "SELECT 1 FROM tracking WHERE event_id = :e", e=before.id) != []


def test_slow_endpoints_never_keep_the_dispatcher_from_polling_kafka_in_time(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    # max.poll.interval.ms 8 s; every attempt takes its whole 1 s timeout; 12 owed at once.
    env = webhooks_env(
        relink_env,
        RELINK_WEBHOOKS_MAX_POLL_INTERVAL_S="8",
        RELINK_WEBHOOKS_TIMEOUT_S="1",
        RELINK_WEBHOOKS_RETRY_SCHEDULE_S="600",
    )
    register(env, receiver)
    receiver.plan = lambda _id, _n: (200, 1.5)
    batch = switch_events(engine, sessions=10)
    assert len(batch) == 12
    produce(settings, batch)
    log_path = tmp_path / "webhooks.log"
    dispatcher = start_dispatcher(env, log_path)
    try:
        wait_for(
            lambda: len(rows(engine, "SELECT 1 FROM webhook_attempts")) == len(batch),
            what="one attempt of each",
        )
        # consumed and committed after the burst, by the same group member
        later = switch_events(engine, sessions=1)
        produce(settings, later)
        wait_for(
            lambda: len(rows(engine, "SELECT 1 FROM webhook_attempts")) == len(batch + later),
            what="the later events attempted",
        )
    finally:
        stop(dispatcher)
    text = log_path.read_text()
    assert "maximum poll interval" not in text, text[-3000:]
    assert "to be retried in 600s" in text


def test_an_endpoint_subscribed_to_cancellations_gets_session_cancelled_and_nothing_else(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env = webhooks_env(relink_env)
    register(env, receiver, "--event-type", "session.cancelled")
    world = make_world(engine, sessions_per_student=[1])
    session = world.sessions[0]
    cancelled = events.new_event(
        "session.cancelled",
        {
            "tutor_id": str(world.tutor_id),
            "session_id": str(session["id"]),
            "student_id": str(session["student"].id),
            "scheduled_start_at": session["starts"].isoformat(),
            "previous_status": "SCHEDULED",
            "provider": "google_meet",
            "meeting_external_id": session["meeting"],
            "cancelled_at": datetime.now(UTC).isoformat(),
        },
        tutor_id=str(world.tutor_id),
        source="https://relink.example/oauth-gateway",
    )
    # the same tutor: one partition, read in this order; the cancellation comes last
    produce(settings, [switched_event(world), migrated_event(world, session), cancelled])
    dispatcher = start_dispatcher(env, tmp_path / "webhooks.log")
    try:
        wait_for(lambda: all_delivered(receiver, [cancelled]), what="the cancellation delivered")
    finally:
        stop(dispatcher)
    assert_delivered(receiver, [cancelled])
    assert {r.message_id for r in receiver.all()} == {msg(cancelled)}
