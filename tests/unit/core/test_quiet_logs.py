"""Start-up stays quiet unless something is wrong; provider requests show only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from services.core.kafka import LIBRDKAFKA_LOGGER, librdkafka_logger, producer_config
from services.core.logs import configure_logging
from services.core.settings import CommonSettings

GETPID = (
    "GETPID [thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:19092/1: "
    "Broker: Coordinator load in progress: retrying"
)


@pytest.fixture
def levels() -> Iterator[None]:
    names = ("httpx", "httpcore", LIBRDKAFKA_LOGGER, "")
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _passes(logger: logging.Logger, level: int, message: str) -> logging.LogRecord | None:
    record = logger.makeRecord(logger.name, level, __file__, 1, message, (), None)
    return record if logger.filter(record) else None


def test_provider_requests_are_debug_lines(levels: None) -> None:
    configure_logging("INFO")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    configure_logging("DEBUG")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_librdkafkas_transient_start_warning_shows_only_at_debug(levels: None) -> None:
    config = producer_config(CommonSettings())
    logger = config["logger"]
    assert logger is librdkafka_logger() and logger.name == LIBRDKAFKA_LOGGER
    logger.setLevel(logging.INFO)
    assert _passes(logger, logging.WARNING, GETPID) is None
    # anything else librdkafka warns about is still a warning
    other = _passes(logger, logging.WARNING, "FAIL [thrd:x]: Connect to 127.0.0.1:1 failed")
    assert other is not None and other.levelno == logging.WARNING
    logger.setLevel(logging.DEBUG)
    shown = _passes(logger, logging.WARNING, GETPID)
    assert shown is not None and shown.levelno == logging.DEBUG
