"""relink's one logger convention.

Every module logs through ``log = get_logger(__name__)``: the logger is named
after the module (``services.relay.entrypoint``, ...), so a deployment can
tune one service or one part of it with the standard `logging` tree, and
the ids a call passes in `extra` (switch, session, tutor, ...) are appended
to the line as ``key=value``. The ids travel in the message itself rather
than in a formatter of ours because Faust installs the migrator's handlers.

Each process's `relink <service>` command calls `configure_logging` once
with its level; nothing else configures logging. Nothing here ever receives
a token.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class IdsLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose `extra` ids (switch, session, tutor, ...) end every line."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra") or {}
        if extra:
            msg = f"{msg} " + " ".join(f"{k}={v}" for k, v in extra.items())
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
