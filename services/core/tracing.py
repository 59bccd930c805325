"""relink's traces: OpenTelemetry, one trace per switch across the four processes.

The OAuth callback (gateway) starts the switch's trace. Its W3C trace context
(`traceparent`, and `tracestate` when there is one) is stored in the `headers`
of every outbox row the switch causes (`core.messages.message_row` asks
`for_row`), the relay sends it as the CloudEvents distributed-tracing extension
(`ce_traceparent` / `ce_tracestate` Kafka headers in binary mode: the context
of the event's creation, which no hop changes), and each consumer continues
the trace from it (`span(..., parent=event.trace)`): the migrator's planning
and each session's provider calls, the notifier's email sends. The rows the
migrator writes later for the same switch (its executor, timers, group
commits) carry the switch's context from `SWITCHES`, which the agent fills
when it plans and which a process that did not plan the switch fills from the
switch's `provider.switched` outbox row (its event id is the switch id, see
`switch_event_id`; the relay keeps published rows for
RELINK_RELAY_RETENTION_HOURS).

Off by default. `configure_tracing(service)` (once per process, beside
`configure_logging`) installs an SDK tracer provider only when the standard
`OTEL_TRACES_EXPORTER` names an exporter:

* `console`: each finished span as one JSON line, on stdout or, with
  RELINK_TRACES_FILE set, appended to that file (what the tests read);
* `otlp`: the OTLP exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`,
  `..._PROTOCOL` = `http/protobuf` or `grpc`), batched; its package
  (`opentelemetry-exporter-otlp-proto-http` or `-grpc`) is installed by the
  deployment that wants it (a clear error names it otherwise).

`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name the process (default
`relink-<service>`), `OTEL_TRACES_SAMPLER` samples, `OTEL_SDK_DISABLED=true`
turns it all off. Unset, nothing is exported and spans cost what the
OpenTelemetry API's no-op tracer costs; an incoming context is still passed on
unchanged, so one process without an exporter does not cut the trace.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span as Span  # re-exported: callers name these
from opentelemetry.trace import SpanKind as SpanKind
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.orm import Session

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The outbox row's `headers` keys and the CloudEvents extension attributes alike.
TRACE_KEYS = (TRACEPARENT, TRACESTATE)
TRACER_NAME = "relink"

Carrier = dict[str, str]

_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False


class TracingSettings(BaseSettings):
    """relink's own tracing setting; the rest are OpenTelemetry's `OTEL_*` variables."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # With OTEL_TRACES_EXPORTER=console: append the JSON lines here instead of stdout.
    traces_file: Path | None = Field(default=None, alias="RELINK_TRACES_FILE")


def enabled() -> bool:
    """Whether this process exports spans (`configure_tracing` installed an exporter)."""
    return _enabled


def configure_tracing(service: str) -> bool:
    """Install the exporter the `OTEL_*` variables name; False (nothing installed) when none.

    `service` names the process when OTEL_SERVICE_NAME does not (`relink-<service>`).
    """
    global _enabled
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")
        if n.strip()
    ]
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    names = [n for n in names if n != "none"]
    if disabled or not names or _enabled:
        return _enabled
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"relink-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "console":
            # Written as each span ends: a process stopped by a signal loses nothing.
            provider.add_span_processor(SimpleSpanProcessor(_json_lines_exporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER={name!r}: relink knows 'console', 'otlp' and 'none'"
            )
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def _json_lines_exporter() -> Any:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    path = TracingSettings().traces_file
    out: IO[str]
    if path is None:
        import sys

        out = sys.stdout
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("a", encoding="utf-8", buffering=1)

    def one_line(span: ReadableSpan) -> str:
        return json.dumps(json.loads(span.to_json(indent=None)), separators=(",", ":")) + "\n"

    return ConsoleSpanExporter(out=out, formatter=one_line)


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    package = "grpc" if protocol.strip() == "grpc" else "http"
    try:
        if package == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
    except ImportError as exc:
        raise ConfigurationError(
            "OTEL_TRACES_EXPORTER=otlp needs "
            f"`pip install opentelemetry-exporter-otlp-proto-{package}`"
        ) from exc
    return OTLPSpanExporter()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def carrier(of: Span | None = None) -> Carrier:
    """The current trace context (or span `of`'s) as W3C headers; {} when none."""
    found: Carrier = {}
    _PROPAGATOR.inject(found, context=trace.set_span_in_context(of) if of is not None else None)
    return {k: v for k, v in found.items() if k in TRACE_KEYS and v}


def trace_of(headers: Mapping[str, Any] | None) -> Carrier:
    """The trace context among `headers` (str or bytes values), checked; {} when none or bad."""
    if not headers:
        return {}
    found: Carrier = {}
    for name in TRACE_KEYS:
        value = headers.get(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and value:
            found[name] = value
    if TRACEPARENT not in found:
        return {}
    span_context = trace.get_current_span(_PROPAGATOR.extract(found)).get_span_context()
    return found if span_context.is_valid else {}


@contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Iterator[Span]:
    """A span (current within the block), child of `parent` (W3C headers) or of the current one.

    With tracing off it records nothing, but a valid `parent` is still the
    current context within the block: the rows written and lines logged there
    carry the trace on.
    """
    context = _PROPAGATOR.extract(trace_of(parent)) if parent else None
    with tracer().start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def start_span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Span:
    """A span not made current (end it yourself): for many spans open at once (a batch)."""
    context = _PROPAGATOR.extract(trace_of(parent)) if parent else None
    return tracer().start_span(name, context=context, kind=kind, attributes=dict(attributes or {}))


def using(current: Span | None, *, end: bool = False) -> AbstractContextManager[object]:
    """Make `current` the current span within a block (and end it after, with `end`)."""
    if current is None:
        return nullcontext()
    return trace.use_span(current, end_on_exit=end)


def failed(current: Span, error: BaseException | str) -> None:
    """Mark a span as failed (the error's type and text, never a token: callers pass ours)."""
    current.set_status(Status(StatusCode.ERROR, str(error)[:200]))


def log_ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex) for a log line; None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


# -- the switch's trace, for rows written later -----------------------------------


def switch_event_id(switch_id: uuid.UUID) -> uuid.UUID:
    """The event id of a switch's `provider.switched` row: the switch id itself.

    So any process can find the switch's trace context in that row's headers
    by the outbox's unique event id (`load_switch`), without a column of its own.
    """
    return switch_id


class SwitchTraces:
    """Each recent switch's trace context, by switch id ({} = known to have none)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._known: OrderedDict[str, Carrier] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, switch_id: object, context: Mapping[str, str]) -> None:
        with self._lock:
            self._known[str(switch_id)] = dict(context)
            self._known.move_to_end(str(switch_id))
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def get(self, switch_id: object) -> Carrier | None:
        """The switch's context; {} when it has none; None when not known here."""
        with self._lock:
            return self._known.get(str(switch_id))

    def forget_all(self) -> None:
        with self._lock:
            self._known.clear()


SWITCHES = SwitchTraces()


def for_row(switch_id: object | None) -> Carrier:
    """The trace context an outbox row stores: its switch's if known here, else the current one."""
    if switch_id is not None:
        known = SWITCHES.get(switch_id)
        if known is not None:
            return known
    return carrier()


_LOOKUP = "SELECT headers FROM outbox WHERE event_id = CAST(:event_id AS uuid)"


def load_switch(conn: Connection | Session, switch_id: object) -> Carrier:
    """The switch's context, from `SWITCHES` or else its `provider.switched` row (then kept).

    With tracing off nothing is read: an unknown switch is kept as having none,
    so rows written for it never take up another switch's current context.
    """
    known = SWITCHES.get(switch_id)
    if known is None:
        known = {}
        if _enabled:
            from sqlalchemy import text

            found = conn.execute(text(_LOOKUP), {"event_id": str(switch_id)}).scalar_one_or_none()
            known = trace_of(found)
        SWITCHES.remember(switch_id, known)
    return known


async def load_switch_async(engine: AsyncEngine, switch_id: object) -> Carrier:
    """`load_switch` for the migrator's async engine (one short read per switch, then kept)."""
    known = SWITCHES.get(switch_id)
    if known is None:
        known = {}
        if _enabled:
            from sqlalchemy import text

            async with engine.connect() as conn:
                result = await conn.execute(text(_LOOKUP), {"event_id": str(switch_id)})
                known = trace_of(result.scalar_one_or_none())
        SWITCHES.remember(switch_id, known)
    return known
