"""The notifier's /metrics (issue 20): emails sent, resent, failed and retried, dead
letters by reason and the group's lag, scraped over HTTP while the real loop runs."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from devtools.smtp_sink.sink import SmtpSink
from devtools.soak.stack import free_port
from services.core import events
from services.core.settings import CommonSettings
from services.notifier.cli import _serve_metrics
from services.notifier.settings import NotifierSettings
from tests.notifier.conftest import (
    make_world,
    migrated_event,
    produce,
    produce_raw,
    rows,
    running_notifier,
    wait_for,
)
from tests.notifier.test_audit import read_all

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert answer.status_code == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def test_emails_dead_letters_and_lag_are_counted(
    engine: Engine,
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    smtp_sink: SmtpSink,
) -> None:
    port = free_port()
    served = notifier_settings.model_copy(update={"metrics_port": port})
    server = _serve_metrics(served)
    assert server is not None
    try:
        # The counters are this process's: compare with what they said before.
        before = scrape(port)
        world = make_world(engine, sessions_per_student=[1, 1, 1], switch_state="MIGRATING")
        bounced = world.students[0].email
        smtp_sink.faults.reject_recipients.add(bounced)
        smtp_sink.stop()
        produce_raw(
            settings,
            settings.topic_session_migrated,
            key=str(world.tutor_id).encode(),
            value=b"{not json",
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", b"x"),
                ("ce_source", b"/evil"),
                ("ce_type", b"session.migrated"),
                ("ce_time", b"2031-01-01T00:00:00Z"),
            ],
        )
        produce(settings, [migrated_event(world, s) for s in world.sessions])

        with running_notifier(served):
            wait_for(
                lambda: (
                    rows(
                        engine,
                        "SELECT count(*) FROM notifications WHERE last_error IS NOT NULL"
                        " AND state = 'PENDING'",
                    )[0][0]
                    == 3
                ),
                what="each email failing once while the mail server is down",
            )
            smtp_sink.start()
            wait_for(
                lambda: (
                    rows(engine, "SELECT count(*) FROM notifications WHERE state = 'PENDING'")[0][0]
                    == 0
                ),
                what="every email settled",
            )
            (letter,) = read_all(settings, settings.topic_dead_letter, expect=1)
            group = served.group_id

            def caught_up() -> bool:
                lag = [s for s in scrape(port) if s[0] == "relink_kafka_consumer_lag"]
                return bool(lag) and all(s[2] == 0 for s in lag)

            wait_for(caught_up, what="the notifier group's lag at 0")
            after = scrape(port)
    finally:
        server.shutdown()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    by_state = dict(
        rows(
            engine,
            "SELECT state || ':' || (attempts > 1)::text, count(*) FROM notifications GROUP BY 1",
        )
    )
    attempts = rows(engine, "SELECT sum(attempts), count(*) FROM notifications")[0]
    assert delta("relink_notifier_emails_total", outcome="sent") == by_state.get("SENT:false", 0)
    assert delta("relink_notifier_emails_total", outcome="resent") == by_state.get("SENT:true", 0)
    # each email failed once while the server was down: the two accepted were resent
    assert delta("relink_notifier_emails_total", outcome="resent") == 2
    assert delta("relink_notifier_emails_total", outcome="sent") == 0
    failed = by_state.get("FAILED_PERMANENT:false", 0) + by_state.get("FAILED_PERMANENT:true", 0)
    assert failed == 1
    assert delta("relink_notifier_emails_total", outcome="failed") == 1
    # every attempt that did not settle its email was a transient failure
    assert delta("relink_notifier_emails_total", outcome="retrying") == attempts[0] - attempts[1]
    reason = dict(letter.headers())[events.DLQ_REASON].decode()  # type: ignore[attr-defined]
    assert delta("relink_dead_letters_total", process="notifier", reason=reason) == 1
    assert delta("relink_dead_letters_total") == 1
    assert all(
        labels["group"] == group for name, labels, _ in after if name == "relink_kafka_consumer_lag"
    )
    assert total(after, "relink_kafka_consumer_lag_up", group=group) == 1
    assert total(after, "relink_build_info", process="notifier") == 1
