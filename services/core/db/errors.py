"""PostgreSQL's passing failures in relink's words, translated once, where they leave the driver.

Errors:

    RelinkError
    └── StoreError
        ├── StoreUnavailable    PostgreSQL cannot be reached or the connection broke (server
        │                       stopped or restarting, network): nothing uncommitted was kept;
        │                       wait (core.backoff) and try again, the loop goes on
        └── RetryableConflict   PostgreSQL aborted the transaction to break a conflict
                                (40001 serialization failure, 40P01 deadlock): run the whole
                                transaction again at once (`run_again`)

Every engine relink makes (`core.db.engine.make_engine`, the migrator's async
engine) translates through SQLAlchemy's `handle_error` hook (`translate_errors`);
the relay's raw psycopg connection calls `translate` itself. Everything else
(a constraint violated, bad SQL) is left as SQLAlchemy raised it: that is a
bug or a rule, not the weather, and is not retried.

`run_again` / `run_again_async` are the one "PostgreSQL aborted it, run it
again" loop: each caller's work is one whole transaction, safe to repeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

from services.core.errors import RelinkError
from services.core.logs import get_logger

if TYPE_CHECKING:
    from services.core.backoff import Outage

log = get_logger(__name__)
T = TypeVar("T")

# PostgreSQL's "run it again" answers: serialization failure, deadlock detected.
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
# The server going or gone: admin / crash shutdown, cannot connect now, too many
# connections. Class 08 (connection exception) is matched by its prefix.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# How often `run_again` runs an aborted transaction before letting the error through.
RUN_AGAIN_ATTEMPTS = 5


class StoreError(RelinkError):
    """PostgreSQL could not do it now; the same work may succeed later."""

    sqlstate: str | None = None


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached or the connection broke; back off and try again."""


class RetryableConflict(StoreError):
    """PostgreSQL aborted the transaction (serialization failure, deadlock); run it again."""


def translate(exc: BaseException, *, is_disconnect: bool = False) -> StoreError | None:
    """`exc` (a psycopg or SQLAlchemy error) in relink's words, or None when it is not weather."""
    if isinstance(exc, StoreError):
        return exc
    orig: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    kind: type[StoreError] | None = None
    if sqlstate in CONFLICT_SQLSTATES:
        kind = RetryableConflict
    elif (
        is_disconnect
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or isinstance(orig, psycopg.InterfaceError)
        or (
            isinstance(orig, psycopg.OperationalError)
            and (sqlstate is None or sqlstate[:2] == "08" or sqlstate in UNAVAILABLE_SQLSTATES)
        )
    ):
        kind = StoreUnavailable
    if kind is None:
        return None
    first_line = str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else ""
    name = type(orig or exc).__name__
    translated = kind(f"{name}: {first_line}" if first_line else name)
    translated.sqlstate = sqlstate
    return translated


def _on_error(context: ExceptionContext) -> BaseException | None:
    if context.is_pre_ping:  # the pool's own liveness probe reconnects by itself
        return None
    return translate(context.original_exception, is_disconnect=context.is_disconnect)


def translate_errors(engine: Engine) -> Engine:
    """Make `engine` (for an async engine, its `sync_engine`) raise `StoreError`s."""
    if not event.contains(engine, "handle_error", _on_error):
        event.listen(engine, "handle_error", _on_error, retval=True)
    return engine


def _conflict_wait_s(attempt: int) -> float:
    return 0.02 * attempt


def run_again(
    work: Callable[[], T], *, what: str, attempts: int = RUN_AGAIN_ATTEMPTS, **ids: Any
) -> T:
    """Run `work` (one whole transaction); run it again while PostgreSQL aborts it as a conflict."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except RetryableConflict as exc:
            if attempt == attempts:
                raise
            log.info("%s: PostgreSQL aborted it (%s); running it again", what, exc, extra=ids)
            time.sleep(_conflict_wait_s(attempt))
    raise AssertionError("unreachable")


def run_while_up(outage: Outage, work: Callable[[], T], *, what: str) -> T | None:
    """`run_again`, unless PostgreSQL is away: then None, said once by `outage`, and the
    next attempt only when its backoff is due (a consume loop's database step)."""
    if not outage.due():
        return None
    try:
        result = run_again(work, what=what)
    except StoreError as exc:
        outage.failed(exc)
        return None
    outage.succeeded()
    return result


async def run_again_async(
    work: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = RUN_AGAIN_ATTEMPTS,
    **ids: Any,
) -> T:
    """`run_again` for async work."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except RetryableConflict as exc:
            if attempt == attempts:
                raise
            log.info("%s: PostgreSQL aborted it (%s); running it again", what, exc, extra=ids)
            await asyncio.sleep(_conflict_wait_s(attempt))
    raise AssertionError("unreachable")
