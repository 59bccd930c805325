"""relink's one logger convention.

Every module logs through ``log = get_logger(__name__)``: the logger is named
after the module (``services.relay.entrypoint``, ...), so a deployment can
tune one service or one part of it with the standard `logging` tree, and
the ids a call passes in `extra` (switch, session, tutor, ...) are appended
to the line as ``key=value``, and within a trace (`core.tracing`) its
``trace_id=`` and ``span_id=`` end it. The ids travel in the message itself rather
than in a formatter of ours because Faust installs the migrator's handlers.

Each process's `relink <service>` command calls `configure_logging` once
with its level; nothing else configures logging. Nothing here ever receives
a token. `Throttle` keeps the Kafka clients' reconnect chatter during an
outage to a line now and then.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from services.core.tracing import log_ids

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class IdsLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose `extra` ids (switch, session, tutor, ...) end every line."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra") or {}
        if extra:
            msg = f"{msg} " + " ".join(f"{k}={v}" for k, v in extra.items())
        ids = log_ids()
        if ids is not None:
            msg = f"{msg} trace_id={ids[0]} span_id={ids[1]}"
        return msg, kwargs


def get_logger(name: str) -> IdsLogger:
    """The logger of module `name` (pass ``__name__``)."""
    return IdsLogger(logging.getLogger(name), {})


# Libraries that log every request at INFO: httpx writes one line per provider call.
# Those lines are DEBUG for relink (a switch's calls are summed up where they matter).
CHATTY_AT_INFO = ("httpx", "httpcore")


def configure_logging(level: str | int) -> None:
    """Send log lines to stderr at `level`, unless the host already set handlers up.

    Each provider HTTP request shows only at DEBUG: at INFO and above the
    request-per-line libraries are held to WARNING.
    """
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    for name in CHATTY_AT_INFO:
        logging.getLogger(name).setLevel(
            logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        )
    root = logging.getLogger()
    if root.handlers:
        root.setLevel(level)
        return
    logging.basicConfig(level=level, format=LOG_FORMAT)


class Throttle(logging.Filter):
    """At most one line of a kind every `every_s` seconds; the next one says how many were left out.

    For client libraries that log every reconnect attempt while a broker is
    down (librdkafka, aiokafka: several lines a second): the outage shows once
    when it starts and again now and then, not thousands of times. A kind is
    the logger and the message's format string (its arguments vary).
    """

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, str], float] = {}
        self._left_out: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, _kind_of(record))
        now = record.created
        last = self._last.get(kind)
        if last is not None and now - last < self.every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like it in the last {self.every_s:.0f}s)"
        return True


def _kind_of(record: logging.LogRecord) -> str:
    # librdkafka's lines arrive as ("%s [%s] %s", facility, client, text): the facility is the kind.
    if record.msg == "%s [%s] %s" and isinstance(record.args, tuple) and record.args:
        return f"{record.msg}:{record.args[0]}"
    return str(record.msg)


def throttle(names: tuple[str, ...], every_s: float = 60.0) -> None:
    """Put one `Throttle` on each of these loggers (once; a second call changes nothing)."""
    shared = Throttle(every_s)
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Throttle) for f in logger.filters):
            logger.addFilter(shared)
