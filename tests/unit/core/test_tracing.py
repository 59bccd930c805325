"""The switch's trace context through the outbox row, the Kafka headers and the parse (issue 20)."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.core import events, tracing
from services.core.logs import LOG_FORMAT, get_logger
from services.core.messages import ProviderSwitched, SessionFailed, message_row
from services.core.settings import CommonSettings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "relink=switch,vendor=x"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """A real SDK provider for these tests' tracer (the process's global stays the no-op one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    real = tracing.tracer
    tracing.tracer = lambda: provider.get_tracer("test")
    tracing.SWITCHES.forget_all()
    try:
        yield exporter
    finally:
        tracing.tracer = real
        tracing.SWITCHES.forget_all()


def _switched(switch_id: uuid.UUID) -> ProviderSwitched:
    return ProviderSwitched(
        switch_id=str(switch_id),
        tutor_id=str(TUTOR),
        from_provider="zoom",
        to_provider="google_meet",
        generation=2,
        switched_at=datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    )


TUTOR = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


def _parse(row: dict[str, object]) -> events.Event:
    message = events.outbox_message(
        event_id=row["event_id"],  # type: ignore[arg-type]
        event_type=str(row["event_type"]),
        aggregate_id=str(row["aggregate_id"]),
        payload=row["payload"],  # type: ignore[arg-type]
        headers=row["headers"],  # type: ignore[arg-type]
    )
    headers = list(message.headers.items())
    assert ("ce_traceparent", TRACEPARENT.encode()) in headers
    return events.parse_message(key=message.key, value=message.value, headers=headers)


def test_traceparent_survives_outbox_row_kafka_headers_and_parse() -> None:
    row = events.outbox_row(
        "provider.switched",
        _switched(uuid.uuid4()).to_payload(),
        tutor_id=str(TUTOR),
        source="/relink/oauth-gateway",
        topics=CommonSettings(),
        trace={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
    )
    assert row["headers"]["traceparent"] == TRACEPARENT
    event = _parse(row)
    assert event.trace == {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    # and back out again, as a consumer re-emitting the event would
    again = events.to_message(event)
    assert again.headers["ce_traceparent"] == TRACEPARENT.encode()
    assert again.headers["ce_tracestate"] == TRACESTATE.encode()


def test_without_a_trace_no_header_is_sent_and_the_event_has_none() -> None:
    row = message_row(
        _switched(uuid.uuid4()), tutor_id=str(TUTOR), source="/relink/x", topics=CommonSettings()
    )
    assert "traceparent" not in row["headers"]
    message = events.outbox_message(
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_id=row["aggregate_id"],
        payload=row["payload"],
        headers=row["headers"],
    )
    assert not any(name == "ce_traceparent" for name in message.headers)
    parsed = events.parse_message(
        key=message.key, value=message.value, headers=list(message.headers.items())
    )
    assert parsed.trace == {}


def test_a_row_written_in_a_span_carries_its_context(exported: InMemorySpanExporter) -> None:
    with tracing.span("oauth callback") as current:
        row = message_row(
            _switched(uuid.uuid4()),
            tutor_id=str(TUTOR),
            source="/relink/x",
            topics=CommonSettings(),
        )
    context = current.get_span_context()
    assert row["headers"]["traceparent"].startswith(
        f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    )
    assert [s.name for s in exported.get_finished_spans()] == ["oauth callback"]


def test_a_switchs_rows_carry_its_trace_not_the_current_one(
    exported: InMemorySpanExporter,
) -> None:
    # The migrator's group commits write rows of many switches in one task:
    # each row takes its own switch's context.
    switch_id = uuid.uuid4()
    tracing.SWITCHES.remember(switch_id, {"traceparent": TRACEPARENT})
    failed = SessionFailed(
        switch_id=str(switch_id),
        session_id=str(uuid.uuid4()),
        tutor_id=str(TUTOR),
        student_id=str(uuid.uuid4()),
        scheduled_start_at=datetime(2026, 12, 1, tzinfo=UTC),
        kind="switch",
        provider="google_meet",
        reason="provider_error",
        retryable=True,
        attempts=1,
        failed_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    with tracing.span("another switch's work"):
        row = message_row(failed, tutor_id=str(TUTOR), source="/relink/x", topics=CommonSettings())
    assert row["headers"]["traceparent"] == TRACEPARENT
    # known to have none: none, even inside someone else's span
    tracing.SWITCHES.remember(switch_id, {})
    with tracing.span("another switch's work"):
        row = message_row(failed, tutor_id=str(TUTOR), source="/relink/x", topics=CommonSettings())
    assert "traceparent" not in row["headers"]


def test_a_consumer_span_continues_the_events_trace(exported: InMemorySpanExporter) -> None:
    with tracing.span("process", parent={"traceparent": TRACEPARENT}):
        assert tracing.carrier()["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    (span,) = exported.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert span.parent.span_id == int("b7ad6b7169203331", 16)


def test_with_tracing_off_a_parent_context_still_flows_on() -> None:
    # No SDK: the API's no-op tracer. The incoming context stays current, so
    # rows and log lines carry it on, and nothing is recorded.
    assert isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )
    with tracing.span("process", parent={"traceparent": TRACEPARENT}) as current:
        assert not current.is_recording()
        assert tracing.carrier() == {"traceparent": TRACEPARENT}
    assert tracing.carrier() == {}


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    ],
)
def test_a_bad_or_missing_traceparent_is_no_trace(headers: dict[str, str] | None) -> None:
    assert tracing.trace_of(headers) == {}


def test_log_lines_carry_the_trace_and_span_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("tests.tracing.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log = get_logger("tests.tracing.logs")
    try:
        log.info("outside", extra={"switch_id": "s1"})
        with tracing.span("inside", parent={"traceparent": TRACEPARENT}):
            log.info("inside", extra={"switch_id": "s1"})
    finally:
        logger.removeHandler(handler)
    outside, inside = stream.getvalue().splitlines()
    assert "trace_id=" not in outside and outside.endswith("outside switch_id=s1")
    assert inside.endswith(
        "inside switch_id=s1 trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331"
    )
