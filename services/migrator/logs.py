"""Structured log lines: the ids a call passes in `extra` are appended as key=value.

Faust owns the logging setup (its worker installs the handlers), so the ids
travel in the message itself rather than in a formatter of ours. Nothing
here ever receives a token.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


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
    return IdsLogger(logging.getLogger(name), {})
